# Two commands on a fresh machine (see README):
#   make serve   set up the serving environment and serve the committed models in exported/
#   make test    set up the full environment (training + test tools) and run every test
# Both create .venv/ with Python 3.11 and install the project; pip generates the gRPC stubs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: serve test setup-serve setup-test lint clean

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

lint: setup-test
	$(BIN)/ruff check .

test: setup-test lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) gen build *.egg-info
