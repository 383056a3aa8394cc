# One entry point for people and CI: `make test` builds what it needs and runs everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
# The suite mostly waits on the services it starts (broker, servers, forwarder subprocesses), so
# three workers finish it in about half the time of one, also on two cores.
TEST_WORKERS ?= 3

.PHONY: bench demo mutation test test-unit test-integration coverage lint format clean browser-deps systemd-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: a broker, a Socket.IO app and the forwarder on this machine; a trading session through them
demo: $(STAMP)
	$(BIN)/python -m demo

BENCH_STAMP := $(VENV)/.bench-installed
BENCH_OUT := bench/out

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

## bench: every benchmark on this machine (about seven minutes, four more for the Kafka matrix): tables on stdout, charts in bench/out/
bench: $(BENCH_STAMP)
	mkdir -p $(BENCH_OUT)
	$(BIN)/python -m bench.publish_latency --gc on --json $(BENCH_OUT)/publish.json
	$(BIN)/python -m bench.end_to_end --json $(BENCH_OUT)/end_to_end.json
	$(BIN)/python -m bench.kafka_matrix --json $(BENCH_OUT)/kafka_matrix.json --chart $(BENCH_OUT)/kafka_matrix.png
	$(BIN)/python -m bench.buffer_throughput --json $(BENCH_OUT)/buffer.json
	$(BIN)/python -m bench.independence --json $(BENCH_OUT)/independence.json
	$(BIN)/python -m bench.chart $(BENCH_OUT)

MUTATION_STAMP := $(VENV)/.mutation-installed
# Mutant names to run again, as globs (make mutation MUTANTS='forwarder.retry.*'); all when empty
MUTANTS ?=

$(MUTATION_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,mutation]'
	touch $(MUTATION_STAMP)

## mutation: mutmut on the transport, worker, batcher, retry and store with the fast tests; scores per module
mutation: $(MUTATION_STAMP) systemd-deps
	$(BIN)/mutmut run $(foreach glob,$(MUTANTS),'$(glob)')
	$(BIN)/python -m mutation.score

## test: lint, then the whole suite (unit, integration against the embedded broker, browser)
test: lint browser-deps systemd-deps
	$(PYTEST) -n $(TEST_WORKERS)

## test-unit: the fast tests, no external service started
test-unit: $(STAMP) systemd-deps
	$(PYTEST) -n $(TEST_WORKERS) -m "not integration and not browser"

## test-integration: the tests that start the broker, servers and the forwarder subprocess
test-integration: $(STAMP) browser-deps systemd-deps
	$(PYTEST) -n $(TEST_WORKERS) -m "integration or browser"

## coverage: the whole suite with branch coverage; fails under 90%
coverage: $(STAMP) browser-deps systemd-deps
	$(BIN)/coverage erase
	COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml $(BIN)/coverage run -m pytest
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

## lint: ruff (lint and format check) and mypy strict
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

BROWSER_DIR := tests/support/browser
BROWSER_STAMP := $(BROWSER_DIR)/node_modules/.installed

## browser-deps: headless Chromium (Debian's package) and the socket.io-client bundle for the browser test
browser-deps: $(BROWSER_STAMP)
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
		else \
			echo "browser-deps: /usr/bin/chromium is missing; as root: apt-get install chromium" >&2; \
		fi; \
	fi

## systemd-deps: systemd-analyze and systemd's env-file parser (Debian's systemd), for the unit tests
systemd-deps:
	@if ! command -v systemd-analyze >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y systemd; \
		else \
			echo "systemd-deps: systemd-analyze is missing; as root: apt-get install systemd" >&2; \
		fi; \
	fi

$(BROWSER_STAMP): $(BROWSER_DIR)/package.json $(BROWSER_DIR)/package-lock.json
	cd $(BROWSER_DIR) && npm ci --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV) mutants .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
