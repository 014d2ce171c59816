# Two commands for a fresh machine:
#   make pretrain   pre-trains a small AIM on built-in data (no downloads)
#   make test       lint + every fast test on jax, torch and tensorflow + each
#                   `large` test once (on the backend it is about)
# and, for CI: make test-all   everything (large, extra_large) on every backend
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Backend of the main job (the tests run every backend); override with
# `make pretrain KERAS_BACKEND=torch`.
KERAS_BACKEND ?= jax

.PHONY: install pretrain test test-all device-bundle device-dry-run

$(VENV)/.installed: requirements-cpu.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-cpu.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

pretrain: install
	KERAS_BACKEND=$(KERAS_BACKEND) $(PY) examples/pretrain.py --output_dir runs/pretrain

test: install
	$(PY) tools/run_tests.py

test-all: install
	$(PY) tools/run_tests.py --all

# Wheels for the lent accelerator machine (no network; maybe no Keras):
# the project, Keras and what it needs, for this Python unless
# DEVICE_PYTHON=3.12 (say) names the device's. See benchmarks/device/.
DEVICE_PYTHON ?=
device-bundle: install
	rm -rf device-bundle && mkdir device-bundle
	$(PY) -m pip wheel --quiet --no-deps -w device-bundle .
	$(PY) -m pip download --quiet -d device-bundle --only-binary=:all: \
	  $(if $(DEVICE_PYTHON),--python-version $(DEVICE_PYTHON)) \
	  keras absl-py safetensors

device-dry-run: install
	PYTHON=$(PY) benchmarks/device/run.sh --dry-run
