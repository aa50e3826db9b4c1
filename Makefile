# One command for each job on a fresh machine: `make demo` (the main job), `make test`.
# Everything runs from a virtual environment at .venv, created here on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test unit lint demo bench clean broker tools

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# pip's cache serves torch (several GB) on a reinstall; no pin forces a second download.
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Prometheus itself and promtool, from Debian's prometheus package, extracted without
# installing it (no service is started, nothing outside .venv is touched). The server runs
# in tests/test_prometheus_server.py (it scrapes a running monitor and answers every panel
# and rule query); promtool checks and unit-tests the rules (tests/test_deploy_files.py).
# Without them those tests fail and say so; PLANTWATCH_SKIP_PROMETHEUS=1 skips them.
TOOLS      := $(VENV)/tools/usr/bin
PROMETHEUS := $(TOOLS)/prometheus
$(PROMETHEUS): | $(STAMP)
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then \
	  ln -sf "$$(command -v prometheus)" $(BIN)/prometheus; ln -sf "$$(command -v promtool)" $(BIN)/promtool; \
	elif command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then \
	  mkdir -p $(VENV)/tools/deb && cd $(VENV)/tools/deb && \
	  { apt-get download prometheus >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; } && \
	  dpkg-deb -x prometheus_*.deb .. && rm -f prometheus_*.deb && \
	  ln -sf $(CURDIR)/$(TOOLS)/prometheus $(CURDIR)/$(BIN)/prometheus && \
	  ln -sf $(CURDIR)/$(TOOLS)/promtool $(CURDIR)/$(BIN)/promtool && \
	  echo "prometheus, promtool: $(TOOLS)" || \
	  echo "Debian's prometheus package could not be fetched; the Prometheus tests will fail"; \
	fi

# kcat, a Kafka client we did not write (tests/test_foreign_clients.py reads our topics with
# it), from Debian's kcat package with the two libraries it links that may be missing
# (librdkafka1, libyajl2), extracted the same way; the test points LD_LIBRARY_PATH at them.
KCAT := $(TOOLS)/kcat
$(KCAT): | $(STAMP)
	@if command -v kcat >/dev/null 2>&1; then ln -sf "$$(command -v kcat)" $(BIN)/kcat; \
	elif command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then \
	  mkdir -p $(VENV)/tools/deb && cd $(VENV)/tools/deb && \
	  { apt-get download kcat librdkafka1 libyajl2 >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && \
	      apt-get download kcat librdkafka1 libyajl2 >/dev/null 2>&1; }; } && \
	  for deb in kcat_*.deb librdkafka1_*.deb libyajl2_*.deb; do dpkg-deb -x "$$deb" .. || exit 1; done && \
	  rm -f ./*.deb && ln -sf $(CURDIR)/$(KCAT) $(CURDIR)/$(BIN)/kcat && echo "kcat: $(KCAT)" || \
	  echo "Debian's kcat package could not be fetched; tests/test_foreign_clients.py will fail"; \
	fi

tools: $(PROMETHEUS) $(KCAT)

# ruff, mypy --strict, and import-linter's layer contracts (pyproject.toml: plantwatch on
# top, the rooms stream/models/alerts independent, common at the bottom).
lint: $(STAMP)
	$(BIN)/ruff check common stream models alerts plantwatch tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Starts a real Kafka broker itself (KAFKA_BOOTSTRAP_SERVERS, a Docker engine, or
# `plantwatch broker` from Maven Central), so it needs nothing running beforehand.
test: $(STAMP) lint
	-@$(MAKE) --no-print-directory tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	-@$(MAKE) --no-print-directory tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m 'not integration and not slow' $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/plantwatch demo

broker: $(STAMP)
	$(BIN)/plantwatch broker start

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
