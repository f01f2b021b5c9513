# spklite — developer entry points. `make run` serves ~/spklite/packages; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` needs only the runtime dependencies: its own venv, without the test tools.
RUN_VENV ?= .venv-run
RUN_STAMP := $(RUN_VENV)/.installed
ARGS ?=

.PHONY: run test lint bench stress pyz spk clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

$(RUN_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/pip install -q --upgrade pip
	$(RUN_VENV)/bin/pip install -q .
	touch $(RUN_STAMP)

# From the checkout (python -m finds ./spklite first), so an edit needs no reinstall: make run ARGS="--port 8081"
run: $(RUN_STAMP)
	$(RUN_VENV)/bin/python -m spklite $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not stress"

lint: $(STAMP)
	$(BIN)/ruff check spklite tests
	$(BIN)/mypy spklite

clean:
	rm -rf $(VENV) $(RUN_VENV) dist build *.egg-info

pyz: $(STAMP)
	$(BIN)/python tools/build_pyz.py -o dist/spklite.pyz

spk: pyz
	$(BIN)/python tools/build_spk.py --pyz dist/spklite.pyz -o dist

# The benchmark (issues 3 and 4): builds its corpora in /tmp, prints one markdown table (~15 min).
# BENCH_ARGS="--runs 5 --keep" etc.; see `$(BIN)/python bench/run.py --help`.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) \
		|| echo "bench: wrk not installed: a Python client drives the load (slower, less exact)"
	$(BIN)/pip install -q py-spy || echo "bench: py-spy not installed: misses are not profiled"
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The hostile-world suite at full size (10,000+ fuzz cases, 60 s of load, 100 kill -9 trials).
stress: $(STAMP)
	SPKLITE_STRESS=full $(BIN)/python -m pytest -q -m stress tests/stress
