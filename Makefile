# The two commands of the README:
#   make repro   set everything up, then run the DVC pipeline on the sample data
#   make test    set everything up, then run the test suite
# Everything is installed into .venv/ inside the project; tool state goes to .state/.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test bench lint clean-state prefect-server preprocess-serve mlflow-ui

setup: $(STAMP)

# requirements.lock pins every package (direct and transitive) that was tested together.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	# test-only: PyPI lpips' own network checks our LPIPS port. --no-deps: its torchvision
	# dependency is a CUDA build that fails to import with our CPU torch, and lpips' network
	# does not need it once the test hands it our ImageNet backbone.
	$(BIN)/python -m pip install -q --no-deps lpips==0.1.4
	touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest

bench: setup
	python bench/preprocess.py
	python bench/preprocess_scaling.py

# The Prefect side (README, "Distributed preprocessing"): a server on 127.0.0.1:4200 with its
# state in .state/prefect, and a process serving the deployment preprocess/preprocess.
PREFECT_ENV := PREFECT_HOME=$(CURDIR)/.state/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false

prefect-server: setup
	$(PREFECT_ENV) prefect server start

preprocess-serve: setup
	$(PREFECT_ENV) PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} \
	  python pipelines/preprocess.py serve

# MLflow's UI on http://127.0.0.1:5000 over the project's tracking store (heser/env.py:
# .state/mlflow.db, or MLFLOW_TRACKING_URI when set); one worker and no job runner (0.5 GB).
MLFLOW_STORE ?= $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/.state/mlflow.db}

mlflow-ui: setup
	mkdir -p .state
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri $(MLFLOW_STORE) --artifacts-destination $(CURDIR)/.state/mlartifacts

lint: setup
	ruff check heser stages pipelines tests bench

clean-state:
	rm -rf .state
