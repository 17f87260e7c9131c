# pagerd — `make run` runs the daemon, `make test` runs every check CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit faults clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Runs pagerd in the foreground with the example config, its database under ./var/,
# and a local mosquitto (installed if missing, started unless one already listens).
run: $(STAMP)
	@mkdir -p var/mosquitto
	@if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then \
	  if [ "$$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq mosquitto; \
	  else echo "mosquitto is missing: run 'sudo apt-get install mosquitto', then make run"; exit 2; fi; \
	fi
	@if bash -c '</dev/tcp/127.0.0.1/1883' 2>/dev/null; then \
	  echo "make run: a broker already listens on 127.0.0.1:1883; using it"; \
	else \
	  if [ "$$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto var/mosquitto; fi; \
	  PATH="$$PATH:/usr/sbin" mosquitto -d -c config/mosquitto.conf; \
	  for i in $$(seq 50); do bash -c '</dev/tcp/127.0.0.1/1883' 2>/dev/null && break; sleep 0.1; done; \
	  echo "make run: started mosquitto with config/mosquitto.conf (persistence in var/mosquitto/)"; \
	fi
	exec $(BIN)/pagerd run --config config/pagerd.toml

lint: $(STAMP)
	$(BIN)/ruff check pagerd tests
	$(BIN)/ruff format --check pagerd tests

typecheck: $(STAMP)
	$(BIN)/mypy

# The escalation core must keep >= 95 % branch coverage on its own tests.
unit: $(STAMP)
	$(BIN)/pytest --cov --cov-branch --cov-report=term-missing:skip-covered
	$(BIN)/coverage report --include='pagerd/core/*.py' --fail-under=95

test: lint typecheck unit

# The fault-injection suite (SIGKILL loops, broker and notification outages, a full
# disk on a tmpfs: needs root), about 4 minutes; CI runs it after `make test`.
faults: $(STAMP)
	$(BIN)/pytest tests/faults -q -s

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage var
