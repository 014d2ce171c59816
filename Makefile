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

.PHONY: install pretrain test test-all

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
