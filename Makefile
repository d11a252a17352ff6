# Clientela — `make help` lists the targets. Two commands do everything on a fresh machine:
#   make run    set up (uv, Kafka, migrations) and run the three services on SQLite
#   make test   set up (uv, Kafka, PostgreSQL) and run the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell deploy/uv.sh)
SERVICES := ingest profile segmentation

.PHONY: deploy-check bench bench-stack bench-ingest bench-profiles bench-segmentation bench-identity bench-segments bench-freshness bench-privacy bench-pipeline bench-api help setup lint fmt test test-unit test-integration test-e2e run migrate topics kafka-up kafka-down db-up db-down clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

setup: ## Install the locked Python dependencies (uv sync)
	@$(UV) sync --frozen --quiet

lint: setup ## ruff format --check, ruff check, mypy --strict
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync mypy .

fmt: setup ## Format and autofix
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

kafka-up: ## Start the real Kafka broker (KRaft) on 127.0.0.1:9092, fetching it from Maven Central once
	@deploy/kafka.sh up

kafka-down: ## Stop the Kafka broker
	@deploy/kafka.sh down

db-up: ## Start PostgreSQL on 127.0.0.1:5432 (installing it when absent) and create the databases
	@deploy/postgres.sh up

db-down: ## Stop the PostgreSQL cluster started by db-up
	@deploy/postgres.sh down

topics: setup kafka-up ## Create the Kafka topics (idempotent)
	@$(UV) run --no-sync python -m shared.topics

migrate: setup ## Apply every service's migrations to its database (*_DATABASE_URL, SQLite by default)
	@for s in $(SERVICES); do $(UV) run --no-sync alembic -c services/$$s/alembic.ini upgrade head || exit 1; done

run: setup kafka-up topics migrate ## Run the three services with their consumers (Ctrl-C stops them)
	@UV=$(UV) deploy/run.sh

test: setup kafka-up db-up ## Run the whole test suite against real Kafka and PostgreSQL
	$(UV) run --no-sync pytest

test-unit: setup ## Unit and contract tests only (no infrastructure)
	$(UV) run --no-sync pytest tests/unit tests/contract

test-integration: setup kafka-up db-up ## Integration tests (real Kafka + PostgreSQL)
	$(UV) run --no-sync pytest tests/integration

test-e2e: setup kafka-up db-up ## End-to-end tests (the services as processes)
	$(UV) run --no-sync pytest tests/e2e

deploy-check: setup ## Validate the deployment files: docker compose config, Kubernetes API types, alert rules
	@deploy/compose-check.sh
	@deploy/k8s-check.sh
	@deploy/rules-check.sh
	$(UV) run --no-sync pytest -q tests/unit/test_unit_deploy.py

clean: ## Delete local SQLite data and caches (not Kafka's or PostgreSQL's data)
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache

bench: bench-ingest bench-profiles bench-segmentation bench-identity bench-segments bench-freshness bench-privacy bench-pipeline bench-api bench-stack ## Run every benchmark (results in bench/results/, summary in bench/README.md)

bench-ingest: setup kafka-up db-up ## 100,000 generated orders and the Olist extract through the batch API into Kafka
	$(UV) run --no-sync python -m bench.ingest

bench-stack: setup kafka-up db-up ## What pydantic and kafka-python alone cost per order: the least time of any pipeline on this stack
	$(UV) run --no-sync python -m bench.stack

bench-profiles: setup db-up ## 100,000 generated orders and the Olist extract through the profile consumer
	$(UV) run --no-sync python -m bench.profiles

bench-segmentation: setup db-up ## The profile events of 100,000 generated orders through the segmentation consumer
	$(UV) run --no-sync python -m bench.segmentation

bench-identity: setup db-up ## Identity resolution vs the generator's truth and Splink (pairwise precision/recall/F1)
	$(UV) sync --frozen --group bench --quiet && $(UV) run --no-sync python -m bench.identity

bench-segments: setup db-up bench-freshness ## Ten segments evaluated in SQL over 100,000 and 1,000,000 profiles, and (bench-freshness) order -> webhook latency
	$(UV) run --no-sync python -m bench.segments

bench-freshness: setup kafka-up db-up ## Order posted -> webhook received latency (p50/p95/p99) at 50 and 200 orders/s (vegeta)
	$(UV) run --no-sync python -m bench.freshness

bench-privacy: setup kafka-up db-up ## Data-subject requests: access report and erasure latency across the services
	$(UV) run --no-sync python -m bench.privacy

bench-pipeline: setup kafka-up db-up ## Orders over HTTP until profiles and segments are final (10k, 100k, Olist), vs COPY + SQL
	$(UV) run --no-sync python -m bench.pipeline

bench-api: setup kafka-up db-up ## Profile GET by id and by e-mail at 100, 500 and 1,000 req/s (vegeta, p50/p95/p99)
	$(UV) run --no-sync python -m bench.api_latency
