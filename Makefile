# The two commands of the README:
#   make repro   set everything up, then run the DVC pipeline on the sample data
#   make test    set everything up, then run the test suite
# Everything is installed into .venv/ inside the project; tool state goes to .state/.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test bench lint clean-state

setup: $(STAMP)

# requirements.lock pins every package (direct and transitive) that was tested together.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest

bench: setup
	python bench/preprocess.py

lint: setup
	ruff check heser stages pipelines tests bench

clean-state:
	rm -rf .state
