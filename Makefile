# Two commands for a fresh machine:
#   make pretrain   pre-trains a small AIM on built-in data (no downloads)
#   make test       lint + the whole test suite on jax, torch and tensorflow
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Backend of the main job (the tests run every backend); override with
# `make pretrain KERAS_BACKEND=torch`.
KERAS_BACKEND ?= jax

.PHONY: install pretrain test test-slow test-all

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
	$(PY) tests/run_all_backends.py

test-slow: install
	$(PY) tests/run_all_backends.py --run-slow

# Everything on every backend (what CI runs). Until the test tiers land
# (`large` / `extra_large` markers), this is the suite with the slow tests.
test-all: install
	$(PY) tests/run_all_backends.py --run-slow
