# Clearhouse: `make run` starts everything, `make test` runs the suite. Needs only python3 + make.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_BOOTSTRAP := .data/uv-venv
UV := $(shell command -v uv 2>/dev/null || echo $(UV_BOOTSTRAP)/bin/uv)
PY := .venv/bin/python
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: help install browsers compose-tool run test lint bench db-start db-stop smoke-production schema client

help:
	@echo "make run     install, start PostgreSQL, migrate, seed, serve API + worker + beat"
	@echo "make test    the whole suite against real PostgreSQL (DATABASE_URL or embedded)"
	@echo "make lint    ruff and the import-linter contracts"
	@echo "make bench   benchmarks (see docs/BENCHMARKS.md)"
	@echo "make smoke-production  the production topology on this machine's PostgreSQL and"
	@echo "             Redis (SMOKE_DATABASE_URL, SMOKE_REDIS_URL), checked end to end, stopped"
	@echo "make schema  regenerate openapi.yaml and docs/API.md from the code (commit both)"
	@echo "make client  regenerate the Python client (clients/python) from openapi.yaml"

$(UV_BOOTSTRAP)/bin/uv:
	@mkdir -p .data
	python3 -m venv $(UV_BOOTSTRAP)
	$(UV_BOOTSTRAP)/bin/python -m pip install --quiet uv

.venv/.installed: pyproject.toml uv.lock openapi.yaml clients/python/pyproject.toml | $(UV)
	$(UV) sync --frozen
	@touch $@

install: .venv/.installed

db-start: install
	@if [ -z "$$DATABASE_URL" ]; then $(PY) tools/devdb.py start; fi

db-stop:
	@$(PY) tools/devdb.py stop

run: install
	$(PY) tools/run.py

# The back-office's browser tests drive Debian's Chromium (Playwright's own download is not
# reachable here). Installed when missing and we may; otherwise those tests skip, saying why.
browsers:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests…"; \
	    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
	      || echo "chromium could not be installed; the browser tests will skip"; \
	  else echo "chromium not on PATH (needs root to install); the browser tests will skip"; fi; \
	fi

# `docker compose config` validates docker-compose.yml in the tests; Debian's docker-compose
# (v1, no engine needed for `config`) when no compose is on PATH and we may install it.
compose-tool:
	@if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq docker-compose || (apt-get update -qq && \
	     apt-get install -y -qq docker-compose)) >/dev/null 2>&1 \
	      || echo "docker-compose could not be installed; its validation test will skip"; \
	  else echo "no docker compose (needs root to install); its validation test will skip"; fi; \
	fi

test: install db-start browsers compose-tool
	$(PY) -m pytest -n $${PYTEST_WORKERS:-2} -p no:cacheprovider $(PYTEST_ARGS)

# The committed contract: tests/test_contract_committed.py fails until this is run after an API
# change (a new endpoint, field, error code or event type).
schema: install
	$(PY) manage.py api_reference

# The generated half of the Python client (clients/python/clearhouse_api, not committed) is
# rebuilt from the committed openapi.yaml by `make install` whenever the schema changes; this
# regenerates it now, offline, in its own environment (the project's stays as it is).
CLIENT_GEN_ENV := .data/client-gen-venv
client: $(UV)
	UV_PROJECT_ENVIRONMENT=$(CLIENT_GEN_ENV) $(UV) sync --frozen --only-group client-gen
	$(CLIENT_GEN_ENV)/bin/python clients/python/hatch_build.py

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check . || true
	.venv/bin/lint-imports

smoke-production: install
	$(PY) tools/smoke_production.py $(SMOKE_ARGS)

bench: install db-start
	$(UV) sync --frozen --group bench
	$(PY) -m bench
