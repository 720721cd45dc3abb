# Developer and CI entry points. Every target creates the virtualenv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test check lint types format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,infra]'
	touch $(STAMP)

## install: create .venv with the agent, the test tools and the CDK libraries
install: $(STAMP)

## demo: sync the recorded fixtures to a local receiver (fake GitLab, Postgres, MHQ)
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## test: the whole test suite against real Postgres and the fake servers
test: $(STAMP)
	$(BIN)/python -m pytest -q

## check: lint and type checks (run by CI before the tests)
check: lint types

lint: $(STAMP)
	$(BIN)/ruff format --check agent tests scripts infra app.py
	$(BIN)/ruff check agent tests scripts infra app.py

types: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format agent tests scripts infra app.py
	$(BIN)/ruff check --fix agent tests scripts infra app.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache cdk.out
