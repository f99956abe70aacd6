# Two entry points: `make run` serves molecules from the bundled checkpoint, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test clean

$(BIN)/molgan: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,fcd]'
	$(BIN)/python -m pip install --quiet --no-deps molsets==0.3.1
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
