# The two commands of the README: `make demo` (main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install

$(BIN)/ibpipeline: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Dagster loads dbt_project/target/manifest.json when it imports the definitions (outside
# `dagster dev`, which re-parses on start), so installing builds it; it is rebuilt when a model changes.
MANIFEST    := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project -path dbt_project/target -prune -o \( -name '*.sql' -o -name '*.yml' \) -print)

$(MANIFEST): $(BIN)/ibpipeline $(DBT_SOURCES)
	$(BIN)/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

install: $(BIN)/ibpipeline $(MANIFEST)

demo: install
	$(BIN)/ibpipeline demo

lint: install
	$(BIN)/ruff check ibpipeline tests bench
	$(BIN)/ruff format --check ibpipeline tests bench

# -n 4 on 2 cores: much of the suite's time is spent waiting (daemons, webservers, simulators,
# polls; with 2 workers the cores were 30 % idle), so more workers shorten it; --durations=25 prints the slowest tests.
# --max-worker-restart=0: a worker that dies ends the run, naming its test (pytest-xdist 3.8 can
# hang forever replacing a crashed worker under --dist loadfile: pytest-xdist#784, #1378)
test: install lint
	$(BIN)/python -m pytest -q -n 4 --dist loadfile --max-worker-restart=0 --durations=25
