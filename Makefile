# Runnel: build, run and test.
#
#   make run    build the release binary and run a local 3-node cluster (data under ./data/node-N)
#   make test   formatting, clippy, Rust tests and the end-to-end pytest suite, then the
#               docker-compose tests (make test-docker) when a Docker engine answers
#
#   make cluster-up / cluster-down   the three-node docker-compose cluster (deploy/)
#   make fuzz / fuzz-net             cargo-fuzz targets (fuzz/) and the network fuzzer (docs/robustness.md)
#
# `make test` installs what it needs by itself, idempotently: a Python venv under .venv
# (packages from tests/requirements.txt, reinstalled only when that file changes) and
# Debian's kcat (apt-get) when no kcat is on PATH, and Debian's libfaketime when missing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
# Targets run one after the other, in the order given, even under `make -j`.
.NOTPARALLEL:

CARGO       ?= cargo
PYTHON      ?= python3
VENV        ?= .venv
REQUIREMENTS := tests/requirements.txt
VENV_STAMP  := $(VENV)/.requirements.installed
# The binary the Python tests run (relative paths are taken from the repository root).
RUNNEL_BIN  ?= target/release/runnel
export RUNNEL_BIN
# Extra arguments for `make run`, i.e. `runnel dev` (e.g. make run ARGS="--base-port 19092 --config num.partitions=3").
ARGS        ?=
# Extra arguments for pytest (e.g. make test-e2e PYTEST_ARGS="-k kcat -x").
# By default the suite runs on 2 workers (pytest-xdist); every test starts its own node
# on its own ports, so tests are independent.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=
# Extra arguments for the docker-compose tests (e.g. make test-docker DOCKER_PYTEST_ARGS="-k partition").
DOCKER_PYTEST_ARGS ?=
# The docker-compose cluster of `make cluster-up`: image, compose file and project name.
IMAGE         ?= runnel:latest
COMPOSE_FILE  := deploy/docker-compose.yml
COMPOSE_PROJECT ?= runnel
# docker-compose 1.x where installed, else the Compose plugin.
COMPOSE := $(shell command -v docker-compose >/dev/null 2>&1 && echo docker-compose || echo docker compose)
export RUNNEL_IMAGE := $(IMAGE)
export RUNNEL_COMPOSE := $(COMPOSE)
# Extra arguments for the benchmark (e.g. make bench BENCH_ARGS="--records-small 5000000").
BENCH_ARGS ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

.PHONY: help build build-faulty run fmt fmt-check clippy test test-rust test-e2e test-docker test-docker-if-available \
	docker-image cluster-up cluster-down bench clean-data venv kcat faketime fuzz fuzz-net

help: ## Show this help
	@echo "Runnel make targets:"
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  %-14s %s\n", $$1, $$2 }'
	@echo
	@echo "Variables: RUNNEL_BIN=$(RUNNEL_BIN)  ARGS='$(ARGS)'  PYTEST_ARGS='$(PYTEST_ARGS)'  PYTEST_WORKERS=$(PYTEST_WORKERS)"

build: ## Build the release binary (target/release/runnel)
	$(CARGO) build --release --bin runnel

# The node with disk-fault failpoints (docs/robustness.md), for tests/python/test_disk_fault.py.
build-faulty:
	$(CARGO) build --release -p runnel --bin runnel-faulty --features failpoints

run: build ## Run a local 3-node cluster (Kafka on 127.0.0.1:9092,9192,9292; data under ./data)
	./target/release/runnel dev --nodes 3 $(ARGS)

fmt: ## Format all Rust code
	$(CARGO) fmt --all

fmt-check: ## Check Rust formatting
	$(CARGO) fmt --all -- --check

clippy: ## Lint with clippy, warnings are errors (also the gateway's fuzzing harness, which only fuzz/ builds, and the failpoints)
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p runnel-gateway --features fuzzing --all-targets -- -D warnings
	$(CARGO) clippy -p runnel-storage -p runnel-broker -p runnel-node -p runnel --features runnel-broker/failpoints,runnel-node/failpoints,runnel/failpoints --all-targets -- -D warnings

test: fmt-check clippy test-rust test-e2e test-docker-if-available ## Run everything: fmt-check, clippy, Rust tests, end-to-end and docker-compose tests

test-rust: ## Rust unit and integration tests (cargo-nextest when installed)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		no_tests=""; \
		if $(CARGO) nextest run --help 2>/dev/null | grep -q -- '--no-tests'; then no_tests="--no-tests=warn"; fi; \
		echo "$(CARGO) nextest run --workspace $$no_tests"; \
		$(CARGO) nextest run --workspace $$no_tests; \
		echo "$(CARGO) nextest run -p runnel-storage -p runnel-broker --features runnel-broker/failpoints -E 'test(failpoint)'"; \
		$(CARGO) nextest run -p runnel-storage -p runnel-broker --features runnel-broker/failpoints -E 'test(failpoint)'; \
	else \
		echo "$(CARGO) test --workspace (cargo-nextest not installed)"; \
		$(CARGO) test --workspace; \
		$(CARGO) test -p runnel-storage -p runnel-broker --features runnel-broker/failpoints failpoint -- --test-threads=1; \
	fi

test-e2e: build build-faulty venv kcat faketime ## End-to-end tests: pytest on tests/python against RUNNEL_BIN
	@test -x "$(RUNNEL_BIN)" || { echo "error: $(RUNNEL_BIN) is not an executable file" >&2; exit 1; }
	$(VENV)/bin/python -m pytest tests/python -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-docker: build docker-image venv ## docker-compose tests (tests/docker): the cluster, host clients, container faults
	$(VENV)/bin/python -m pytest tests/docker $(DOCKER_PYTEST_ARGS)

# `make test` runs the docker-compose tests only where a Docker engine answers.
test-docker-if-available:
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory test-docker; \
	else \
		echo "test-docker: SKIPPED: no Docker engine answers ('docker info' failed); the docker-compose tests did not run"; \
	fi

docker-image: build ## Build the runnel:latest image (deploy/Dockerfile), and a local Debian base where none can be pulled
	IMAGE=$(IMAGE) deploy/docker-image.sh

cluster-up: docker-image ## Start the 3-node docker-compose cluster (Kafka on 127.0.0.1:19092,29092,39092) and wait until healthy
	$(COMPOSE) -p $(COMPOSE_PROJECT) -f $(COMPOSE_FILE) up -d
	@deploy/wait-healthy.sh $(COMPOSE_PROJECT) 180

cluster-down: ## Stop and remove the docker-compose cluster; its data stays in the volumes (add -v by hand to drop them)
	$(COMPOSE) -p $(COMPOSE_PROJECT) -f $(COMPOSE_FILE) down

bench: build ## Benchmark with librdkafka (tests/bench): throughput, latency, RSS; writes target/bench/
	$(CARGO) run --release --manifest-path tests/bench/Cargo.toml -- --runnel-bin $(RUNNEL_BIN) $(BENCH_ARGS)

clean-data: ## Delete the data directories of `make run` (./data)
	rm -rf ./data

# Seconds each fuzz target runs in `make fuzz` (e.g. make fuzz FUZZ_SECONDS=600).
FUZZ_SECONDS ?= 60

fuzz: ## Run every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (60) each on nightly; logs in fuzz/target/fuzz-logs
	@if ! $(CARGO) +nightly fuzz --version >/dev/null 2>&1; then \
		echo "fuzz: cargo-fuzz not found, installing it from crates.io"; \
		$(CARGO) install cargo-fuzz --locked; \
	fi
	@cd fuzz && mkdir -p target/fuzz-logs && failed="" && \
	for t in $$($(CARGO) +nightly fuzz list); do \
		log="target/fuzz-logs/$$t.log"; \
		echo "fuzz: $$t for $(FUZZ_SECONDS)s (log: fuzz/$$log)"; \
		if $(CARGO) +nightly fuzz run "$$t" -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 >"$$log" 2>&1; then \
			status=ok; \
		else \
			status=FAILED; failed="$$failed $$t"; \
		fi; \
		stat() { sed -n "s/^stat::$$1: *//p" "$$log" | tail -n 1; }; \
		corpus=$$(grep -o 'corp: [0-9]*' "$$log" | tail -n 1 | cut -d' ' -f2 || true); \
		echo "fuzz: $$t $$status: $$(stat number_of_executed_units) executions in $$(grep -o 'Done [0-9]* runs in [0-9]* second' "$$log" | tail -n 1 | cut -d' ' -f5)s ($$(stat average_exec_per_sec) exec/s), peak RSS $$(stat peak_rss_mb) MB, corpus $${corpus:-?} inputs"; \
		if [ "$$status" = FAILED ]; then \
			grep -E 'Test unit written to|SUMMARY|panicked at' "$$log" | sed 's/^/fuzz:   /' || tail -n 20 "$$log"; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed (reproducers under fuzz/artifacts/)"; exit 1; fi

# Seconds of the long network-fuzzer round of `make fuzz-net`.
FUZZ_NET_SECONDS ?= 600

fuzz-net: build venv ## Network fuzzer: mutated client frames against a live 3-node cluster with a checked workload, FUZZ_NET_SECONDS (600)
	$(VENV)/bin/python tests/python/netfuzz.py --seconds $(FUZZ_NET_SECONDS)

# --- tools the end-to-end tests need ------------------------------------------------------

venv: ## Create .venv and install tests/requirements.txt (only when it changed)
	@if [ -x "$(VENV)/bin/python" ] && ! "$(VENV)/bin/python" -m pip --version >/dev/null 2>&1; then \
		echo "venv: $(VENV) is broken, recreating it"; rm -rf "$(VENV)"; \
	fi
	@if [ ! -x "$(VENV)/bin/python" ]; then \
		echo "venv: creating $(VENV) with $(PYTHON) -m venv"; \
		if ! $(PYTHON) -m venv "$(VENV)"; then \
			echo "venv: '$(PYTHON) -m venv' failed; installing Debian's python3-venv"; \
			rm -rf "$(VENV)"; \
			$(SUDO) apt-get install -y python3-venv || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv; }; \
			$(PYTHON) -m venv "$(VENV)"; \
		fi; \
		rm -f "$(VENV_STAMP)"; \
	fi
	@if ! cmp -s "$(REQUIREMENTS)" "$(VENV_STAMP)"; then \
		echo "venv: installing $(REQUIREMENTS) into $(VENV)"; \
		"$(VENV)/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$(REQUIREMENTS)"; \
		cp "$(REQUIREMENTS)" "$(VENV_STAMP)"; \
	else \
		echo "venv: $(VENV) is up to date with $(REQUIREMENTS)"; \
	fi

faketime: ## Install Debian's libfaketime (tests/python/test_clock_jump.py steps a node's wall clock with it)
	@if ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then \
		echo "faketime: $$(ls /usr/lib/*/faketime/libfaketime.so.1 | head -n 1)"; \
	else \
		echo "faketime: not found, installing Debian's faketime"; \
		$(SUDO) apt-get install -y faketime || { $(SUDO) apt-get update && $(SUDO) apt-get install -y faketime; }; \
		ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null; \
	fi

kcat: ## Install Debian's kcat when no kcat is on PATH
	@if command -v kcat >/dev/null 2>&1; then \
		echo "kcat: $$(command -v kcat)"; \
	else \
		echo "kcat: not found, installing Debian's kcat"; \
		$(SUDO) apt-get install -y kcat || { $(SUDO) apt-get update && $(SUDO) apt-get install -y kcat; }; \
		command -v kcat >/dev/null; \
	fi
