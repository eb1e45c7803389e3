# dlkit: `make run` trains the main job, `make test` runs the test suite (each installs what it needs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DLKIT_DATA ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),)
export DLKIT_DATA
PYTEST_WORKERS ?= 2

.PHONY: run test verify bench lint status install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# pyproject.toml declares compatible ranges; constraints.txt pins the exact versions the project is tested against.
PIP_INSTALL := $(BIN)/python -m pip install -q -c constraints.txt

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	touch $@

# the test run needs the dev extra too: tests/test_lint.py runs ruff
$(VENV)/.installed-test: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e ".[test,dev,tb]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/dlkit run mlp-digits --out runs/mlp-digits --overwrite

test: install-test
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15

verify: install
	$(BIN)/dlkit verify --all
	$(BIN)/dlkit status

bench: install-test
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

lint: install-test
	$(BIN)/ruff check src tests benchmarks

status: install
	$(BIN)/dlkit status

clean:
	rm -rf runs .pytest_cache
