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

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[test,tb]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/dlkit run mlp-digits --out runs/mlp-digits

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
