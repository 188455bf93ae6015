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

install: $(BIN)/ibpipeline

demo: install
	$(BIN)/ibpipeline demo

lint: install
	$(BIN)/ruff check ibpipeline tests bench
	$(BIN)/ruff format --check ibpipeline tests bench

test: install lint
	$(BIN)/python -m pytest -q
