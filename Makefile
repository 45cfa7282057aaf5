# planr-bus — two commands on a fresh machine with Python 3.11+ and make:
#   make run    creates .venv, installs, runs the demo on the embedded broker
#   make test   creates .venv if needed, installs, runs ruff, mypy and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
# pytest processes: the suite mostly waits on the broker and on the processes it starts, so
# three workers (each with its own embedded broker) finish it well before one does
TEST_WORKERS ?= 3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "planr-bus needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/planr run --demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
