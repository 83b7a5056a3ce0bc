# Leviathan: `make demo` runs the whole loop on embedded defaults; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LEVIATHAN_HOME ?= $(CURDIR)/.leviathan
export LEVIATHAN_HOME

.PHONY: install demo test lint format ui bench clean sandbox-check

install: $(VENV)/.installed

# The first install downloads Dagster and its family (~400 MB): pip's own progress is shown.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "make: $(PYTHON) has no venv module: install python3-venv (Debian) or Python 3.11+"; exit 2; }
	@echo "==> creating $(VENV) and installing Leviathan with its dependencies (1-4 minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check --progress-bar on --upgrade pip
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -e '.[dev]'
	touch $@

# The demo's test commands run in the sandbox (bubblewrap): brought like make test's prerequisites.
demo: install
	scripts/with-test-services --demo $(BIN)/leviathan --home $(LEVIATHAN_HOME) demo

# scripts/with-test-services brings what the suite needs beyond the demo (bubblewrap, Chromium,
# kubectl, PostgreSQL on 127.0.0.1:5432) or says in one line what is missing.
PYTEST_ARGS ?= -n auto
test: install lint
	scripts/with-test-services $(BIN)/pytest $(PYTEST_ARGS)

# One line naming what is missing when no sandbox can be created here (bubblewrap, user namespaces).
sandbox-check: install
	@$(BIN)/python -c "import sys; from leviathan_dagster.core.sandbox import sandbox_problem as p; sys.exit(p() and 'no sandbox here: ' + p())"

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The Dagster UI on the demo's instance (runs, assets, lineage, checks), with the daemon so sensors,
# the schedule and runs launched from the UI work. Run `make demo` first. Ctrl-C stops both.
# CONFIG= another leviathan.yaml (its home's instance: LEVIATHAN_HOME=...), PORT= another port.
CONFIG ?= $(LEVIATHAN_HOME)/demo/leviathan.yaml
PORT ?= 3000
UI_ENV = DAGSTER_HOME=$(LEVIATHAN_HOME)/dagster LEVIATHAN_CONFIG=$(abspath $(CONFIG))
ui: install
	@test -f $(CONFIG) || { echo "make ui: no config at $(CONFIG) (run 'make demo' first, or pass CONFIG=path/to/leviathan.yaml)"; exit 2; }
	@mkdir -p $(LEVIATHAN_HOME)/dagster
	@test -f $(LEVIATHAN_HOME)/dagster/dagster.yaml || cp leviathan_dagster/instance/dagster.yaml $(LEVIATHAN_HOME)/dagster/dagster.yaml
	trap 'kill 0' INT TERM EXIT; \
		$(UI_ENV) $(BIN)/dagster-daemon run -w workspace.yaml & \
		$(UI_ENV) $(BIN)/dagster-webserver -w workspace.yaml -h 127.0.0.1 -p $(PORT)

bench: install
	$(BIN)/python benchmarks/bench_readiness.py
	$(BIN)/python benchmarks/bench_cycle.py
	$(BIN)/python benchmarks/bench_history.py
	$(BIN)/python benchmarks/bench_parallel.py
	$(BIN)/python benchmarks/bench_worker.py
	$(BIN)/python benchmarks/bench_backlog_validation.py
	$(BIN)/python benchmarks/bench_agent_cost.py
	$(BIN)/python benchmarks/bench_event_log.py
	$(BIN)/python benchmarks/bench_merkle.py

clean:
	rm -rf $(VENV) $(LEVIATHAN_HOME) .pytest_cache .ruff_cache
