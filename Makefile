# CommandCenter — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 9002
PYTEST_ARGS ?=
BENCH_ARGS ?=

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@interp=$$(scripts/find-python) || exit 1; \
	if [ ! -x $(PY) ]; then echo "Creating $(VENV) with $$interp"; "$$interp" -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## Create .venv and install the service with its development tools

test-deps: ## Install the Debian programs the tests drive (prometheus, alertmanager, chromium), or say how
	@scripts/install-test-deps

run: install ## Quick start on SQLite: migrate, sync demo workflows, admin user, web on :9002 + one worker
	@scripts/quickstart $(PORT)

test: install test-deps ## Run the whole test suite against PostgreSQL (DATABASE_URL, default 127.0.0.1:5432)
	@scripts/with-test-db $(PY) -m pytest $(PYTEST_ARGS)

lint: install ## ruff (format check + lint), the import layers contract, Django checks, migrations up to date
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	DEBUG=1 $(PY) manage.py check
	DEBUG=1 $(PY) manage.py makemigrations --check --dry-run

typecheck: install ## mypy with django-stubs
	DEBUG=1 $(VENV)/bin/mypy .

schema: install ## Write workflows/definitions/workflow.schema.json, the JSON Schema of definition files
	DEBUG=1 $(PY) manage.py definition_schema

lock: ## Re-pin constraints.txt from a fresh resolve of pyproject.toml
	@interp=$$(scripts/find-python) && rm -rf var/lockenv && "$$interp" -m venv var/lockenv && \
	var/lockenv/bin/pip install -q --upgrade pip && var/lockenv/bin/pip install -q '.[dev]' && \
	var/lockenv/bin/pip freeze --exclude-editable | grep -v '^commandcenter' > constraints.txt && rm -rf var/lockenv

bench: install ## Benchmark (table + var/bench/results.json); BENCH_ARGS=--quick for the CI-sized smoke
	$(PY) -m bench $(BENCH_ARGS)

clean: ## Remove the virtualenv and local state (SQLite database, logs)
	rm -rf $(VENV) var

.PHONY: help install test-deps run test lint typecheck schema lock clean bench
