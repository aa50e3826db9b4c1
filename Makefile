# One command for each job on a fresh machine: `make demo` (the main job), `make test`.
# Everything runs from a virtual environment at .venv, created here on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test unit lint demo bench clean broker

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# pip's cache serves torch (several GB) on a reinstall; no pin forces a second download.
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check stream models alerts tests bench
	$(BIN)/mypy

# Starts a real Kafka broker itself (KAFKA_BOOTSTRAP_SERVERS, a Docker engine, or
# `plantwatch broker` from Maven Central), so it needs nothing running beforehand.
test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest -m 'not integration and not slow' $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/plantwatch demo

broker: $(STAMP)
	$(BIN)/plantwatch broker start

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
