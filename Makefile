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

# One torch/OpenMP thread per test worker: two workers on two cores, no oversubscription (Snakemake does
# the same for DAG jobs by setting OMP_NUM_THREADS to each rule's threads).
test: env
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q --durations=12

lint: env
	$(BIN)/snakemake --lint --configfile config/demo.yaml

# The workflow through a one-node SLURM cluster (tests/test_slurm.py; root, Debian's slurm-wlm and munge)
.PHONY: test-slurm
test-slurm: env
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests/test_slurm.py

clean-demo:
	rm -rf results/synth-* results/report results/logs resources/data/synth-* .snakemake
