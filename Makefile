# pagerd — `make run` runs the daemon, `make test` runs every check CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	@echo "pagerd: the daemon is not there yet (see the open issues); 'pagerd version' works:"
	$(BIN)/pagerd version

lint: $(STAMP)
	$(BIN)/ruff check pagerd tests
	$(BIN)/ruff format --check pagerd tests

typecheck: $(STAMP)
	$(BIN)/mypy

# The escalation core must keep >= 95 % branch coverage on its own tests.
unit: $(STAMP)
	$(BIN)/pytest --cov --cov-branch --cov-report=term-missing:skip-covered
	$(BIN)/coverage report --include='pagerd/domain.py' --fail-under=95

test: lint typecheck unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage var
