# The two commands a new user needs (see README):  make demo   and   make test
PYTHON ?= python3.11
VENV   ?= .venv
CORES  ?= 2
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medflow-installed

.PHONY: install demo test lint clean-results

# torch==2.14.1 / torchvision==0.29.1 come from the local wheel cache through plain pip.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Set everything up and run the whole workflow on the demo cohorts.
demo: install
	$(BIN)/snakemake --cores $(CORES)

## Lint (ruff, snakemake --lint) and run the test suite.
test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results resources logs .snakemake
