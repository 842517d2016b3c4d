# Ringmon: `make run` starts the standalone system, `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench cluster cluster-down drills system-deps venv clean

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

bench: $(STAMP) system-deps
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

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
