# authbus — the commands a newcomer needs. `make help` lists them.
# Everything installs into gitignored caches (.venv, .cache) and is skipped when present.

.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: help setup run test unit integration e2e fault compose-test lint format bench clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## Install Python deps (.venv), the Kafka jars and SecantusDB (.cache)
	@bash scripts/bootstrap.sh
	@$(VENV)/authbus-dev infra install

run: setup ## Start Kafka, SecantusDB and the services locally (Ctrl-C stops all; PROMETHEUS=1: and Prometheus)
	@$(VENV)/authbus-dev up $(if $(PROMETHEUS),--prometheus)

test: setup lint ## What CI runs: lint, types, import boundaries, then compose, unit, integration, e2e, fault
	@$(VENV)/pytest -m "" --durations=15

unit: ## Only the fast tests (no network)
	@bash scripts/bootstrap.sh
	@$(VENV)/pytest

integration: setup ## Tests against the real Kafka broker and MongoDB-wire server
	@$(VENV)/pytest -m integration

e2e: setup ## Tests that start the real service processes
	@$(VENV)/pytest -m e2e

fault: setup ## The fault suite: outages and pauses injected into a fleet of its own (~5 min)
	@$(VENV)/pytest -m fault -s

compose-test: setup ## docker-compose.yml built, scaled and checked on a Docker engine of its own (root)
	@$(VENV)/pytest -m compose -s --durations=10

lint: ## ruff (lint + format check), mypy strict, import boundaries
	@bash scripts/bootstrap.sh
	@$(VENV)/ruff check .
	@$(VENV)/ruff format --check .
	@$(VENV)/mypy
	@$(VENV)/lint-imports

format: ## Apply ruff's fixes and formatting
	@$(VENV)/ruff check --fix .
	@$(VENV)/ruff format .

bench: setup ## Cold verification through Kafka (about 10 minutes; see bench/verify_over_kafka)
	@$(VENV)/python -m bench.verify_over_kafka

clean: ## Remove run state (.run); keeps the download caches
	@rm -rf .run
