# The quick start's two commands: `make demo` and `make test`. Each creates the environment when missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
# PEERS=1: also install the `peers` extra (Cellpose 3, StarDist), e.g. `make test PEERS=1`
PEERS ?= 0

.PHONY: demo test lint env clean-demo

# Fast when nothing changed (a second); see scripts/make_env.sh for the cached environment.
env:
	@PYTHON=$(PYTHON) OBJGUIDED_PEERS=$(PEERS) bash scripts/make_env.sh $(VENV)

demo: env
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml

# The demo with two seeds (mean ± std and seed bands in the report), about twice its time
.PHONY: demo-seeds
demo-seeds: env
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo-seeds.yaml

# One torch/OpenMP thread per test worker: two workers on two cores, no oversubscription (Snakemake does
# the same for DAG jobs by setting OMP_NUM_THREADS to each rule's threads).
test: env
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q --durations=12

# ruff (pinned in requirements-dev.txt, installed into .venv on first use), no function of the package over 80
# lines, and Snakemake's linter on both configs that ship runnable; any finding fails the target.
RUFF_VERSION := $(shell sed -n 's/^ruff==//p' requirements-dev.txt)
lint: env
	@$(BIN)/ruff --version 2>/dev/null | grep -qx "ruff $(RUFF_VERSION)" || \
		$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/ruff check .
	$(BIN)/python scripts/longest_functions.py --most 3 --limit 80 objguided methods
	$(BIN)/snakemake --lint --configfile config/test.yaml
	$(BIN)/snakemake --lint --configfile config/demo.yaml

# The workflow through a one-node SLURM cluster (tests/test_slurm.py; root, Debian's slurm-wlm and munge)
.PHONY: test-slurm
test-slurm: env
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests/test_slurm.py

clean-demo:
	rm -rf results/synth-* results/report results/logs resources/data/synth-* .snakemake
