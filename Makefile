PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch's OpenMP threads spin-wait by default, which slows everything on a shared 2-core machine
export OMP_WAIT_POLICY ?= PASSIVE
# the browser of the end-to-end UI tests (Debian's chromium and chromium-driver packages)
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver

.PHONY: setup setup-ui demo lint test test-ui test-all clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=/path/to/python3.11'"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/sarbridge demo --out runs/demo

# ruff (style, import order, no function-local imports outside app/cli), mypy on src/, then the tests
# (tests/arch checks the layering: core < data, nn, losses, retrieval, viz < tasks < app)
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

# Installs Debian's chromium + chromium-driver when either binary is missing (sudo only when not root).
setup-ui:
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then \
	  echo "setup-ui: $(CHROMIUM) and $(CHROMEDRIVER) present"; \
	else \
	  command -v apt-get >/dev/null 2>&1 || { echo "error: $(CHROMIUM) or $(CHROMEDRIVER) missing and apt-get is not available; install Chromium and its chromedriver, then run 'make test-ui CHROMIUM=/path/to/chromium CHROMEDRIVER=/path/to/chromedriver'"; exit 2; }; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  echo "setup-ui: installing chromium and chromium-driver with apt-get"; \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver || exit 2; \
	fi

# End-to-end tests of 'sarbridge serve' in headless Chromium; fails (not skips) without the browser.
test-ui: setup setup-ui
	SARBRIDGE_UI_REQUIRED=1 SARBRIDGE_CHROMIUM=$(CHROMIUM) SARBRIDGE_CHROMEDRIVER=$(CHROMEDRIVER) \
	  $(BIN)/python -m pytest -q -m ui

test-all: setup
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) runs .pytest_cache
