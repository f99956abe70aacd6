# Two entry points: `make run` serves molecules from the bundled checkpoint, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test clean

# constraints.txt: the tested version of every package, so a new release upstream changes nothing.
$(BIN)/molgan: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,fcd]'
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps molsets
	touch $@

install: $(BIN)/molgan

run: install
	$(BIN)/molgan serve --host $(HOST) --port $(PORT)

test: install
	bash scripts/install-test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
