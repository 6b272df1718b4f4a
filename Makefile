# garmin2strava: every target sets up what it needs from the repository's own files.
# Python >= 3.12 is found on PATH (pyenv and uv honour .python-version); override with
# `make PYTHON=/path/to/python3.12 ...`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell for p in python3.13 python3.12 python3 python; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { echo $$p; break; }; done)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never

.PHONY: help setup check format test demo run get-token bench layer image tf-init tf-plan tf-apply clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.12 not found on PATH; run 'make PYTHON=/path/to/python3.12 ...'" >&2; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"
	@touch $@

setup: $(VENV)/.synced ## create .venv from uv.lock (pinned)

check: setup ## ruff, mypy --strict, hadolint
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi

format: setup ## ruff format + autofix
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: setup ## the whole test suite (unit, functional, integration on loopback)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup ## the real sync against the local emulators, on a temporary SQLite store
	$(BIN)/garmin2strava demo

run: setup ## the daemon, configured from the environment / .env
	$(BIN)/garmin2strava run

get-token: setup ## Strava OAuth for your own app; prints the refresh token
	$(BIN)/garmin2strava get-token

bench: setup ## print API budgets and timings against the sandbox
	$(BIN)/python bench/uploader.py

clean: ## remove the virtual environments and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
