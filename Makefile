# The two commands a new machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml clients/python/pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install run test lint settings services test-tools schema golden clean fuzz

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install -q --disable-pip-version-check -e clients/python
	@rm -f $(VENV)/.installed-*
	@touch $@

services:
	@deploy/local/ensure-services.sh rabbitmq

test-tools:
	@deploy/local/install-test-tools.sh

run: install services
	@$(BIN)/intake config check
	@$(BIN)/intake migrate
	exec $(BIN)/intake run all

# The quick chaos run (tests/chaos) runs beside the rest: it starts RabbitMQ nodes and a
# PostgreSQL of its own on free ports, and spends most of its minutes waiting for them to come
# back, so running it in turn would add those minutes to every `make test`.
CHAOS_LOG := $(VENV)/chaos-quick.log
# The rest runs on pytest-xdist workers, a test file per worker at a time (module fixtures stay
# whole): most of its time is spent waiting on brokers, databases and child processes.
TEST_WORKERS ?= 2
test: install test-tools
	@deploy/local/ensure-services.sh rabbitmq postgres
	@$(BIN)/python -m pytest -q -p no:cacheprovider --durations=5 tests/chaos \
	  >$(CHAOS_LOG) 2>&1 & chaos=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 --ignore=tests/chaos \
	  -n $(TEST_WORKERS) --dist loadfile; rest=$$?; \
	wait $$chaos; quick=$$?; \
	echo "===== tests/chaos (run beside the rest, exit $$quick) ====="; cat $(CHAOS_LOG); \
	test $$rest -eq 0 && test $$quick -eq 0

# Every parser and entry point under hypothesis, FUZZ_N inputs each (100,000: about 50 minutes
# on 2 cores); a crash leaves its input in tests/fuzz/crashes/ (see tests/fuzz/README.md).
# schemathesis runs FUZZ_N / 20 requests per operation of the agent API and the web form
# (5,000 each at the default: about 7 minutes more).
FUZZ_N ?= 100000
fuzz: install
	FUZZ_N=$(FUZZ_N) $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=0 tests/fuzz

# The fault scenarios on a RabbitMQ node and a PostgreSQL of their own (tests/chaos/README.md):
# CHAOS_N submissions each, about 10 minutes; fails if any accepted submission is lost or
# doubled. CHAOS_ONLY=poison,broker_outage runs some of them.
CHAOS_N ?= 10000
CHAOS_ONLY ?=
.PHONY: chaos
chaos: install
	$(BIN)/python -m tests.chaos.run --count $(CHAOS_N) $(if $(CHAOS_ONLY),--only $(CHAOS_ONLY))

# ruff everywhere; mypy strict on intake/ (configured in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy intake

# Rewrites the settings table in README.md from the settings models (a test fails while stale).
settings: install
	$(BIN)/intake settings --write

schema: install
	$(BIN)/intake schema --write

# Rewrites a connector's fixtures/*.expected.json from what it produces now: review the diff.
golden: install
	INTAKE_GOLDEN=1 $(BIN)/python -m pytest -q connectors/$(CHANNEL)

clean:
	rm -rf var .pytest_cache

# The benchmark (bench/README.md). Variables: SCENARIO (all, or names/groups: raw,
# router-decision, router-service, webform, mixed, memory), N (messages), RATE (open loop, per
# second; default 0.2 × the raw hop), C (closed-loop clients), DB (sqlite or postgres),
# BASELINE (a previous JSON to compare with), PROFILE=1 (py-spy flame graphs per service).
SCENARIO ?= all
DB ?= sqlite
C ?= 32
BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	@rm -f $(VENV)/.bench-*
	@touch $@

bench: install $(BENCH_STAMP)
	@deploy/local/ensure-services.sh rabbitmq $(if $(filter postgres,$(DB)),postgres)
	$(BIN)/python -m bench --scenario '$(SCENARIO)' --db $(DB) -c $(C) \
	  $(if $(N),-n $(N)) $(if $(RATE),--rate $(RATE)) $(if $(BASELINE),--baseline $(BASELINE)) \
	  $(if $(filter 1 true yes,$(PROFILE)),--profile)
