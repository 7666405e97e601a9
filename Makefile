# One command each: `make demo` (set up + run the offline demo), `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench train soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,postgres]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/listener demo

test: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy listener connectors enrich storage scheduler.py

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[train]'
	$(BIN)/listener bench

train: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[train]'
	$(BIN)/python -m enrich.training all

soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --minutes $(or $(MINUTES),10)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
