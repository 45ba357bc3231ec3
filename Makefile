# clawlist — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run demo test test-pg test-openclaw lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $@

run: $(STAMP)  ## start the server on the embedded SQLite at http://127.0.0.1:8008
	$(BIN)/clawlist serve

demo: $(STAMP)  ## a live market: a server on a temporary database and simulated agents trading (Ctrl-C stops)
	$(BIN)/clawlist demo

test: $(DEV_STAMP)  ## the whole test suite (PostgreSQL tests skip when it is unreachable, except under CI=true)
	$(BIN)/pytest -q

test-pg: $(DEV_STAMP)  ## only the PostgreSQL variants
	$(BIN)/pytest -q -m postgres

test-openclaw: $(DEV_STAMP)  ## opt-in: a real OpenClaw from npm (cached in ~/.cache/clawlist-openclaw) answers on clawlist
	CLAWLIST_OPENCLAW=1 $(BIN)/pytest -q tests/openclaw $(PYTEST_ARGS)

lint: $(DEV_STAMP)  ## ruff, mypy strict, import-linter
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(DEV_STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(DEV_STAMP)  ## the send/history benchmark (prints figures)
	$(BIN)/python bench/send_history.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
