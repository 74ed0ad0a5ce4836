# The two commands of the README: `make run` and `make test`. Both install what they
# need (Debian packages, the Python virtual environment, the embedded Asterisk) and are
# quick the second time: each step checks before it installs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Debian packages the product needs at run time, and those only the tests need.
APT_RUN := mmdebstrap ca-certificates espeak-ng
# libnss3-tools, iproute2, nftables and openssl: the remote-agent browser tests (a test
# CA in Chromium's certificate store, a network namespace for the agent's machine, its
# link cut or black-holed by nft inside that namespace).
# docker-compose: `docker-compose config` validates docker-compose.yml (no engine runs).
# kamailio: the cluster's SIP edge (its rendered configuration, the dispatch tests), with
# its websocket and tls modules (browsers register to it over WSS); haproxy: the edge's
# HTTPS in front of the nodes' dashboards.
APT_TEST := postgresql chromium libnss3-tools iproute2 nftables openssl docker-compose kamailio \
	kamailio-websocket-modules kamailio-tls-modules haproxy
PYTEST_ARGS ?=

.PHONY: run test setup setup-test lint typecheck screenshots clean

run: setup
	$(BIN)/switchboard run

test: setup setup-test lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed
	@$(MAKE) --no-print-directory apt PACKAGES="$(APT_RUN)"
	@command -v npm >/dev/null || $(MAKE) --no-print-directory apt PACKAGES="nodejs npm"
	@bash web/static/build_vendor.sh
	@$(BIN)/switchboard setup

setup-test: $(VENV)/.installed
	@$(MAKE) --no-print-directory apt PACKAGES="$(APT_TEST)"

lint: $(VENV)/.installed
	$(BIN)/ruff check pbx handoff web tests

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# The README's pictures, updated on purpose: the browser tests that take them write to
# build/screenshots (a test run never changes the checkout); this copies them over.
screenshots: setup setup-test
	rm -rf build/screenshots
	$(BIN)/pytest -q -m screenshots tests/e2e
	cp build/screenshots/*.png tests/e2e/screenshots/

# Long steps tell their progress in a few lines (each step, a count every 25 packages,
# totals and errors) rather than silence or a line per package: pbx/setup_progress.py,
# on the system's python3 (the virtual environment may not exist yet).
PROGRESS := $(PYTHON) -m pbx.setup_progress

# Install the Debian packages in $(PACKAGES) that are missing; nothing, and no line, if
# all are there.
.PHONY: apt
apt:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "Debian packages missing:$$missing (run as root, or install them)"; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update 2>&1 | $(PROGRESS) apt-get \
	    || { echo "apt-get update failed (its errors are above): check the network and /etc/apt/sources.list, then run make again"; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing 2>&1 | $(PROGRESS) apt-get \
	    || { echo "apt-get install$$missing failed (its errors are above): check the network and that these packages exist in your Debian or Ubuntu release, then run make again"; exit 1; }; \
	fi

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) --no-print-directory apt PACKAGES="python3-venv"
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@echo "installing the Python packages of pyproject.toml into $(VENV)"
	@$(BIN)/pip install --disable-pip-version-check --progress-bar off -e '.[dev]' 2>&1 | $(PROGRESS) pip \
	  || { echo "pip install failed (its errors are above): check the network or pip's package index (pip config list), then run make again"; exit 1; }
	@touch $@

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
