# Ringmon: `make run` starts the standalone system, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench load fuzz cluster cluster-down drills system-deps venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash services/install-system-deps.sh

run: $(STAMP)
	$(BIN)/ringmon standalone --config configs/standalone.yaml

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

# Benchmarks print figures; none asserts a time. The 10-minute load run and the fuzzing run
# have their own targets.
BENCHES := scrape storage rollup query web ring_sim alert_latency
bench: $(STAMP) system-deps
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

load: $(STAMP) system-deps
	$(BIN)/python bench/load.py --minutes 10

fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py

# A local cluster: ZooKeeper, Cassandra, 3 scrapers, rollup, alerter, web, 10 pools x 10 hosts.
cluster: $(STAMP) system-deps
	$(BIN)/python -m cli.cluster up

cluster-down:
	$(BIN)/python -m cli.cluster down

# Failure drills against their own cluster (run/drills/); prints what was lost and recovery times.
drills: $(STAMP) system-deps
	$(BIN)/python -m drills

clean:
	rm -rf $(VENV) .cache build *.egg-info
