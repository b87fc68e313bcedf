# `make run` and `make test` are the two commands a new user needs; both bootstrap the venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make dev PORT=3001`, `make prod HOST=0.0.0.0`: where the Dagster UI listens.
HOST ?= 127.0.0.1
PORT ?= 3000
# pytest-xdist workers of `make test` (whole test files per worker); TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

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
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

lint: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `dagster dev` (UI, daemon, code server) on .dagster_home, the instance `make run` records in.
dev: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/python -m pipelines.dev --host $(HOST) --port $(PORT)

# The production profile (deploy/dagster.yaml: PostgreSQL, run queue, pools) on this machine:
# code server + dagster-daemon + dagster-webserver, DAGSTER_HOME=.dagster_prod; the PostgreSQL
# named by DAGSTER_PG_* or an embedded one. See docs/operations.md.
prod: $(STAMP)
	$(BIN)/python -m pipelines.prod --home $(CURDIR)/.dagster_prod --host $(HOST) --port $(PORT)

clean:
	rm -rf warehouse .dagster_home .dagster_prod
