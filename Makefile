# `make run` and `make test` are the two commands a new user needs; both bootstrap the venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format dev prod clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rlhf-curate run

test: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

dev: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev

# The production profile (deploy/dagster.yaml: PostgreSQL, run queue, pools) on this machine:
# code server + dagster-daemon + dagster-webserver, DAGSTER_HOME=.dagster_prod; the PostgreSQL
# named by DAGSTER_PG_* or an embedded one. See docs/operations.md.
prod: $(STAMP)
	$(BIN)/python -m pipelines.prod --home $(CURDIR)/.dagster_prod

clean:
	rm -rf warehouse .dagster_home .dagster_prod
