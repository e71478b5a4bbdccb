# Every target installs what it needs first, so each works on a fresh clone.
# The first of python3.11, python3.12, python3.13, python3 that runs and is 3.11-3.13 (override: PYTHON=...).
# 3.11 first: it is what CI runs. A pyenv shim for a version that is not selected fails the probe.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3.11 python3.12 python3.13 python3; do \
  $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 && { echo $$p; break; }; \
  done)
endif
VENV ?= .venv
BIN := $(VENV)/bin
# Offline machines: point the data stage at a local mirror, e.g.
#   make demo CIFAR10_SOURCE=/path/to/cifar10-jpeg.tar.gz
export CIFAR10_SOURCE
PYTEST_ARGS ?=
DEMO_ARGS ?=  # e.g. DEMO_ARGS=--keep-serving

.DEFAULT_GOAL := help
.PHONY: help install system-deps demo repro serve test test-full test-fast lint format clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no Python 3.11, 3.12 or 3.13 found; install one or pass PYTHON=/path/to/python3.x" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $@

install: $(BIN)/.installed ## Create .venv and install the project with every extra

repro: install ## Run the DVC pipeline (prepare -> train -> evaluate -> export -> register)
	PATH=$(CURDIR)/$(BIN):$$PATH dvc repro

demo: repro ## The main job: dvc repro, then promote, sync, serve, first request, offline evaluation
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m scripts.demo $(DEMO_ARGS)

serve: install ## Serve model_repository/ with the embedded tritonserver (Ctrl-C stops)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/cifar10 serve --model-repository model_repository \
	  --admin-token-file .triton-token

system-deps: ## Debian's prometheus + promtool, PostgreSQL and haproxy for the tests that start them (apt, needs root)
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v haproxy >/dev/null \
	  && { command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus postgresql haproxy >/dev/null; \
	else echo "warning: prometheus, postgresql or haproxy not installed; the tests that need them will skip"; fi

test: install system-deps ## The test suite CI runs (GPU tests skip without a GPU; `full` ones excluded)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m "not full" $(PYTEST_ARGS)

test-full: install system-deps ## Every test, including the 5,000-image accuracy run through Triton
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install ## Unit tests only, no slow end-to-end runs
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install ## ruff check, format check and the import-linter layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove generated data, artifacts, reports and the local MLflow store
	rm -rf data artifacts reports model_repository mlflow.db mlartifacts
