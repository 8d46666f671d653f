# tagstream: `make demo` runs the whole system locally, `make test` proves it works.
# Both do their own set-up (deploy/local/setup.sh: idempotent, caches under ~/.cache/tagstream).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-unit lint format bench stack-up stack-down schemas clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

setup: ## Install everything (system packages, cached venv, Kafka jars, data); idempotent
	@bash deploy/local/setup.sh

demo: setup ## Run the whole system locally: stack, training, workers, trainer, live view
	@$(BIN)/tagstream demo

test: setup lint ## Lint, then run every test against the real Kafka and Redis (the cluster scenarios at CI size included)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: cluster
cluster: setup ## The three-broker fault scenarios at CI size (docs/reliability.md, section 12)
	$(BIN)/pytest tests/cluster -m cluster_scenario --timeout 900 -rA $(PYTEST_ARGS)

.PHONY: test-confluent
test-confluent: setup ## The worker, reliability and messaging tests with every worker's output on librdkafka
	TAGSTREAM_KAFKA_PRODUCER_BACKEND=confluent-kafka $(BIN)/pytest tests/worker tests/reliability tests/messaging $(PYTEST_ARGS)

test-unit: setup ## Only the tests that need no server
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

lint: setup ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/tagstream schemas export --check

format: setup ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## Benchmarks into docs/benchmarks.md (BENCH_MODE=quick|full)
	$(BIN)/python -m benchmarks --mode $${BENCH_MODE:-quick}

.PHONY: chaos
chaos: setup ## Reliability scenarios at full size (docs/reliability.md); figures in build/chaos.jsonl
	@mkdir -p build && rm -f build/chaos.jsonl
	TAGSTREAM_CHAOS_SCALE=long TAGSTREAM_CHAOS_RESULTS=build/chaos.jsonl \
		$(BIN)/pytest tests/reliability tests/cluster -m integration --timeout 1800 -rA $(PYTEST_ARGS)

stack-up: setup ## Start the local Kafka + Redis in the background
	@$(BIN)/tagstream stack up

stack-down: ## Stop the local Kafka + Redis
	@$(BIN)/tagstream stack down

schemas: setup ## Regenerate schemas/json from the pydantic models
	$(BIN)/tagstream schemas export

clean: ## Remove build and test debris from the checkout (caches stay)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
