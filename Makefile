# The two commands of the README: `make run` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run test lint typecheck unit clean

install:
	scripts/install.sh

install-dev:
	scripts/install.sh dev

## Run the service on its embedded defaults (SQLite registry, local job runner).
run: install
	$(BIN)/charnn serve

## Everything CI checks: lint, types, the whole test suite.
test: install-dev lint typecheck unit

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck:
	$(BIN)/mypy

unit:
	scripts/test.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
