# Leviathan: `make demo` runs the whole loop on embedded defaults; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LEVIATHAN_HOME ?= $(CURDIR)/.leviathan
export LEVIATHAN_HOME

.PHONY: install demo test lint format ui bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/leviathan --home $(LEVIATHAN_HOME) demo

test: install lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The Dagster UI on the demo's instance (runs, assets, lineage, checks), with the daemon so sensors,
# the schedule and runs launched from the UI work. Run `make demo` first. Ctrl-C stops both.
UI_ENV = DAGSTER_HOME=$(LEVIATHAN_HOME)/dagster LEVIATHAN_CONFIG=$(LEVIATHAN_HOME)/demo/leviathan.yaml
ui: install
	@test -f $(LEVIATHAN_HOME)/dagster/dagster.yaml || { echo "run 'make demo' first"; exit 1; }
	trap 'kill 0' INT TERM EXIT; \
		$(UI_ENV) $(BIN)/dagster-daemon run -w workspace.yaml & \
		$(UI_ENV) $(BIN)/dagster-webserver -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	$(BIN)/python benchmarks/bench_readiness.py
	$(BIN)/python benchmarks/bench_cycle.py
	$(BIN)/python benchmarks/bench_worker.py
	$(BIN)/python benchmarks/bench_event_log.py
	$(BIN)/python benchmarks/bench_merkle.py
	$(BIN)/python benchmarks/bench_history.py
	$(BIN)/python benchmarks/bench_parallel.py

clean:
	rm -rf $(VENV) $(LEVIATHAN_HOME) .pytest_cache .ruff_cache
