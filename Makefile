# pagerd — `make run` tries the daemon out, `make test` runs every check CI runs.
PYTHON ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# Installed: pagerd and its runtime dependencies (what `make run` needs) ...
RUNTIME := $(VENV)/.runtime
# ... and the dev extras: tests, checks, benchmarks (what `make test` needs).
STAMP   := $(VENV)/.installed
# Every package at the version it was tested with (`make constraints` refreshes the pins).
PIP     := $(BIN)/pip install --quiet --constraint constraints.txt

.PHONY: run stop test lint typecheck unit faults system-packages system-packages-run \
	constraints clean

# The Debian packages, one install step for all (.ci/system-packages says which and why):
# as root it installs what is missing, as anyone else it prints the command to run.
system-packages-run:
	@PYTHON=$(PYTHON) .ci/system-packages run
system-packages:
	@PYTHON=$(PYTHON) .ci/system-packages test

$(RUNTIME): pyproject.toml constraints.txt | system-packages-run
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) --editable .
	touch $@

$(STAMP): $(RUNTIME)
	$(PIP) --editable '.[dev]'
	touch $@

# pagerd in the foreground with config/pagerd.toml, a local mosquitto and the notification
# stand-in, which prints every page; state, logs and the API token under ./var/.
run: $(RUNTIME)
	@.ci/local run

# Stops what `make run` started, from any terminal.
stop:
	@.ci/local stop

lint: $(STAMP)
	$(BIN)/ruff check pagerd tests
	$(BIN)/ruff format --check pagerd tests

typecheck: $(STAMP)
	$(BIN)/mypy

# The escalation core must keep >= 95 % branch coverage on its own tests.
unit: $(STAMP)
	$(BIN)/pytest --cov --cov-branch --cov-report=term-missing:skip-covered
	$(BIN)/coverage report --include='pagerd/core/*.py' --fail-under=95

test: system-packages lint typecheck unit

# The fault-injection suite (SIGKILL loops, broker and notification outages, a full disk on
# a tmpfs, two nodes killed in turn: needs root), about 8 minutes; CI runs it after `make test`.
faults: system-packages $(STAMP)
	$(BIN)/pytest tests/faults -q -s

# Re-resolves every dependency to the newest pyproject.toml allows, in a scratch virtualenv,
# and pins the result in constraints.txt. Run the tests after, and commit both files.
constraints:
	rm -rf $(VENV)-constraints
	$(PYTHON) -m venv $(VENV)-constraints
	$(VENV)-constraints/bin/pip install --quiet --upgrade pip
	$(VENV)-constraints/bin/pip install --quiet '.[dev]'
	{ sed -n '1,2p' constraints.txt; $(VENV)-constraints/bin/pip freeze --all \
	  --exclude pagerd --exclude setuptools --exclude wheel; } >constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(VENV)-constraints

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage var
