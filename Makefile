# spklite — developer entry points. `make run` serves ~/spklite/packages; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench stress pyz spk clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/spklite

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check spklite tests
	$(BIN)/mypy spklite

clean:
	rm -rf $(VENV) dist build *.egg-info

pyz: $(STAMP)
	$(BIN)/python tools/build_pyz.py -o dist/spklite.pyz

spk: pyz
	$(BIN)/python tools/build_spk.py --pyz dist/spklite.pyz -o dist
