# Every target bootstraps .venv itself, so a fresh clone needs nothing else first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
N ?= 3

.PHONY: install test run lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	$(BIN)/llmsim serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check llmsim cluster tests benchmarks
	$(BIN)/ruff format --check llmsim cluster tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# `make cluster N=4 ARGS="--base-port 9001"`: N instances under supervisord (see README).
.PHONY: cluster cluster-status cluster-down
cluster: $(STAMP)
	$(BIN)/llmsim cluster up -n $(N) $(ARGS)

cluster-status: $(STAMP)
	$(BIN)/llmsim cluster status $(ARGS)

cluster-down: $(STAMP)
	$(BIN)/llmsim cluster down $(ARGS)
