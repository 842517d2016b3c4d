# Ringmon: `make run` starts the standalone system, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-loaded lint bench load fuzz cluster cluster-down drills screenshots system-deps venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m query.kernels  # (compiles the query kernels into numba's cache once: query/kernels.py)
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash services/install-system-deps.sh

run: $(STAMP)
	$(BIN)/ringmon standalone --config configs/standalone.yaml

# mypy (single-threaded, ~20 s of CPU on a fresh clone) runs beside pytest's first minute of
# single-process unit tests; its report is printed after pytest's, and either failing fails.
# pytest prints its 20 slowest steps: where the 15-minute budget goes.
test: $(STAMP) system-deps
	$(BIN)/ruff check .
	@log=$$(mktemp); $(BIN)/mypy >$$log 2>&1 & mypy_pid=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=20; rc=$$?; \
	wait $$mypy_pid; mypy_rc=$$?; echo "mypy:"; cat $$log; rm -f $$log; \
	[ $$rc -eq 0 ] && [ $$mypy_rc -eq 0 ]

# The tests that need neither ZooKeeper nor Cassandra and are not marked slow: the edit-test loop.
test-fast: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not cassandra and not zookeeper and not slow"

# The whole suite with every core kept busy by a CPU hog (one spinning process per core, killed
# when the run ends, each bounded by `timeout`): tests must wait on events, not on wall time.
# PYTEST_ARGS narrows it, e.g. make test-loaded PYTEST_ARGS=tests/test_zk_scrapers.py
HOG_PROCS ?= $(shell nproc)
test-loaded: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	@hogs=""; for i in $$(seq $(HOG_PROCS)); do timeout 3h $(BIN)/python -c 'while True: pass' & hogs="$$hogs $$!"; done; \
	trap 'kill $$hogs 2>/dev/null' EXIT INT TERM; echo "CPU hog: $(HOG_PROCS) spinning processes ($$hogs)"; \
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# ruff, and mypy over the product packages and bench/ (settings in mypy.ini).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

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
	$(BIN)/python -m cluster up

cluster-down:
	$(BIN)/python -m cluster down

# Failure drills against their own cluster (run/drills/); prints what was lost and recovery times.
drills: $(STAMP) system-deps
	$(BIN)/python -m drills

# The README's screenshots (docs/screenshots/): a standalone ten minutes old, in headless Chromium.
screenshots: $(STAMP) system-deps
	$(BIN)/python tests/screenshots.py --minutes 10

clean:
	rm -rf $(VENV) .cache build *.egg-info
