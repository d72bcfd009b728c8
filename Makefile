# twofa: two commands do everything — `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest unit integration e2e reliability bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Extra flags for twofa dev, e.g. make run ARGS="--demo --replicas auth=2"
ARGS ?=

run: $(STAMP)
	$(BIN)/twofa dev $(ARGS)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# Two workers (pytest-xdist), each with its own embedded servers; a module stays on one
# worker. PYTEST_WORKERS=0 runs in this process. make reliability stays serial.
PYTEST_WORKERS ?= 2

pytest: $(STAMP)
	@$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

# Faults and attacks against a running stack, with a report table (tests/reliability).
reliability: $(STAMP)
	@$(BIN)/pytest tests/reliability $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The mutation harness (tests/reliability/mutants.py): each planted bug, in a copy of the
# tree, must make the property test fail; prints caught / missed. E.g. MUTANTS_ARGS="--only lock".
MUTANTS_ARGS ?=

.PHONY: mutants
mutants: $(STAMP)
	$(BIN)/python -m tests.reliability.mutants $(MUTANTS_ARGS)

# The benchmark suite (bench/README.md): every part, or BENCH_ARGS="run login otp".
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS  ?= run

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .twofa .mypy_cache .pytest_cache .ruff_cache
