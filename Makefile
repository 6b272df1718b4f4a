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
CHECKOV := $(TOOLS)/checkov/bin/checkov
export UV_PYTHON_DOWNLOADS := never

.PHONY: help setup check format unit test test-fast browser demo run get-token bench bench-webhook bench-files layer lambda-package image tf-init tf-plan tf-apply tf-check clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.12 not found on PATH; run 'make PYTHON=/path/to/python3.12 ...'" >&2; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# Bytecode is compiled at install, as pip and the image (UV_COMPILE_BYTECODE) do: every
# interpreter the tests start (the workers, the CLI and crash children) then reads it,
# instead of compiling botocore, moto, ... from source where PYTHONDONTWRITEBYTECODE is
# set (what that costs the suite: docs/benchmarks.md, "The test suite").
$(VENV)/.synced: pyproject.toml sandbox/pyproject.toml uv.lock | $(UV)
	UV_COMPILE_BYTECODE=1 $(UV) sync --locked --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"
	@touch $@

setup: $(VENV)/.synced ## create .venv from uv.lock (pinned)

check: setup ## ruff, mypy --strict, hadolint
	$(BIN)/ruff format --check src sandbox tests bench tools
	$(BIN)/ruff check src sandbox tests bench tools
	$(BIN)/mypy
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi

format: setup ## ruff format + autofix
	$(BIN)/ruff format src sandbox tests bench tools
	$(BIN)/ruff check --fix src sandbox tests bench tools

# pytest-xdist workers for `make test` and `make test-fast` (each its own moto server and
# crash fork server; ports and directories are per test). More than the cores: a good
# part of the suite waits on loopback servers and child processes rather than computes.
# `make test PYTEST_WORKERS=0` runs in one process; PYTEST_ARGS adds to the command.
PYTEST_WORKERS ?= 4

# The edit loop: the unit and functional tests (no loopback server, moto or crash child).
# They compute rather than wait, so one worker per core of this 2-core machine: a third
# worker only adds its start-up (measured side by side: 26-28 s of CPU with 2 workers,
# 32-34 s with 3, and the longer wall time).
UNIT_WORKERS ?= 2

unit: setup ## unit + functional tests: the edit loop (<= 30 s)
	@$(BIN)/python -m compileall -q src sandbox/src tests bench
	$(BIN)/python -m pytest -n $(UNIT_WORKERS) tests/unit tests/functional $(PYTEST_ARGS)

test: setup $(CHECKOV) browser ## the whole test suite (unit, functional, integration on loopback)
	@$(BIN)/python -m compileall -q src sandbox/src tests bench  # the project's own, as the venv's
	G2S_REQUIRE_TOOLS=1 $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-fast: setup ## the suite without the tests marked slow (README says which): ~100 s, not an edit loop
	@$(BIN)/python -m compileall -q src sandbox/src tests bench
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

# The status page's browser test drives Debian's chromium (headless). Installed as root
# with apt when missing; elsewhere plain pytest says why the test is skipped, and
# `make test` (G2S_REQUIRE_TOOLS=1) or CI=true fails it.
CHROMIUM ?= /usr/bin/chromium
browser: ## Debian's chromium for the status page's browser test (apt-get, as root)
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make browser: no $(CHROMIUM); install Debian's chromium as root (apt-get install chromium)" >&2; \
		if [ "$${CI:-}" = true ]; then exit 1; fi; exit 0; fi; \
	for attempt in 1 2 3; do \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core \
			&& [ -x "$(CHROMIUM)" ] && exit 0; \
		echo "make browser: apt-get failed (attempt $$attempt of 3)" >&2; sleep 10; \
	done; exit 1

demo: setup ## the real sync against the local emulators, on a temporary SQLite store
	$(BIN)/garmin2strava demo

run: setup ## the daemon, configured from the environment / .env
	$(BIN)/garmin2strava run

get-token: setup ## Strava OAuth for your own app; prints the refresh token
	$(BIN)/garmin2strava get-token

bench: setup ## print API budgets and timings against the sandbox
	$(BIN)/python bench/uploader.py

bench-webhook: setup ## webhook load (latency, exactly once) and SIGKILL under load
	$(BIN)/python bench/webhook_load.py --runs 3
	$(BIN)/python bench/webhook_crash.py

bench-files: setup ## the file check on the real recordings: s/MiB per file, peak RSS of big GPX
	$(BIN)/python bench/file_check.py

clean: ## remove the virtual environments and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

# --- AWS / container ---
# terraform/README.md and docs/deploy-container.md describe these.
.PHONY: check-infra
IMAGE ?= garmin2strava:latest
TERRAFORM ?= terraform
TF := $(TERRAFORM) -chdir=terraform
LAYER_DIR := build/lambda-layer
LAYER_ZIP := build/lambda-layer.zip
PACKAGE_ZIP := build/lambda-package.zip

# The same deterministic writer as the code package (sorted, fixed time and mode, no
# bytecode): the same uv.lock gives the same bytes, and terraform no new layer version.
layer: $(UV) ## Lambda layer zip of the locked dependencies (manylinux x86_64, CPython 3.12), deterministic
	rm -rf $(LAYER_DIR) $(LAYER_ZIP)
	mkdir -p $(LAYER_DIR)
	$(UV) export --frozen --no-dev --no-emit-project --output-file $(LAYER_DIR)/requirements.txt
	$(UV) pip install --target $(LAYER_DIR)/python --python-platform x86_64-manylinux2014 \
		--python-version 3.12 --only-binary :all: --require-hashes -r $(LAYER_DIR)/requirements.txt
	$(TOOLS)/bin/python tools/lambda_package.py --tree $(LAYER_DIR)/python --output $(LAYER_ZIP)

# Rebuilt on every run (a few hundred small files, well under a second): the zip is
# byte-identical for the same sources, so terraform sees its hash change only with the code.
lambda-package: $(UV) ## Lambda code package zip: src/garmin2strava only, deterministic
	$(TOOLS)/bin/python tools/lambda_package.py --source src --output $(PACKAGE_ZIP)

image: ## container image $(IMAGE) (needs a running Docker engine)
	@command -v docker >/dev/null 2>&1 || { echo "error: 'docker' not found; 'make image' needs a Docker engine" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers ('docker info' failed); start one and retry" >&2; exit 1; }
	docker build -t $(IMAGE) .

tf-init: ## terraform init in terraform/
	@command -v $(TERRAFORM) >/dev/null 2>&1 || { echo "error: '$(TERRAFORM)' not found; install Terraform >= 1.6 or set TERRAFORM=" >&2; exit 1; }
	$(TF) init

tf-plan: layer lambda-package ## build the layer and the code package, then terraform plan into terraform/.terraform/tfplan
	@command -v $(TERRAFORM) >/dev/null 2>&1 || { echo "error: '$(TERRAFORM)' not found; install Terraform >= 1.6 or set TERRAFORM=" >&2; exit 1; }
	$(TF) plan -out=.terraform/tfplan

tf-apply: ## apply the plan saved by 'make tf-plan'
	@command -v $(TERRAFORM) >/dev/null 2>&1 || { echo "error: '$(TERRAFORM)' not found; install Terraform >= 1.6 or set TERRAFORM=" >&2; exit 1; }
	@test -f terraform/.terraform/tfplan || { echo "error: no saved plan; run 'make tf-plan' first" >&2; exit 1; }
	$(TF) apply .terraform/tfplan

# terraform checked as users deploy it, offline (terraform/README.md "Checks"): fmt, init
# through a generated CLI config (hashicorp/aws from a filesystem mirror when one is
# found, else the registry), validate, then plan, apply, a smoke test of the deployed
# handlers under awslambdaric, and destroy, all against moto server on loopback, in a
# temporary copy of terraform/. TF_PROVIDER_MIRROR names the mirror (the directory
# holding registry.terraform.io/); empty searches terraform's usual places and /opt.
# Without terraform it skips, visibly; CI=true or G2S_REQUIRE_TOOLS=1 make that fail.
TF_PROVIDER_MIRROR ?=
tf-check: setup lambda-package ## terraform fmt/init/validate, then plan+apply+smoke+destroy on moto
	PYTHONPATH=tools $(BIN)/python -m tf_check --terraform "$(TERRAFORM)" --source terraform \
		--package $(PACKAGE_ZIP) --mirror "$(TF_PROVIDER_MIRROR)"

# checkov lives in its own environment, pinned by tools/checkov.lock: its bc-python-hcl2
# installs an `hcl2` module over python-hcl2's in a shared venv.
$(CHECKOV): tools/checkov.lock | $(UV)
	$(UV) venv --quiet --allow-existing $(TOOLS)/checkov --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"
	$(UV) pip sync --quiet --python $(TOOLS)/checkov/bin/python tools/checkov.lock
	@touch $@

check-infra: setup $(CHECKOV) ## checkov on terraform/ (.checkov.yaml) and hadolint on the Dockerfile
	$(CHECKOV) -d terraform --config-file .checkov.yaml
	$(BIN)/hadolint Dockerfile
	@if command -v $(TERRAFORM) >/dev/null 2>&1; then $(TF) fmt -check -diff; \
	else echo "check-infra: no '$(TERRAFORM)' on PATH, terraform fmt skipped (make tf-check fails without it under CI)" >&2; fi
