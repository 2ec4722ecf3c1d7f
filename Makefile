# The two commands a new user needs (see README):  make demo   and   make test
PYTHON ?= python3.11
VENV   ?= .venv
CORES  ?= 2
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medflow-installed

.PHONY: install demo test lint browser cluster-test clean-results

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
test: install lint browser
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory cluster-test

## Chromium from Debian for the report rendering test (skipped, with its reason, where it cannot be installed).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } \
	  || echo "chromium is not installed and could not be: the browser test will be skipped"

## A one-node SLURM cluster on this machine runs a tiny workflow through profiles/slurm (needs root;
## installs slurm + munge with apt where missing; skipped, with its reason, where it cannot run).
cluster-test: install
	MEDFLOW_PYTHON=$(abspath $(BIN))/python bash tests/cluster/slurm_one_node.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results resources logs .snakemake
