#!/usr/bin/env bash
# Mutation testing of objguided/models (mutmut 3) against the paper-pin tests and the models tests.
#
#   benchmarks/mutation.sh [WORKDIR] [TIME_CAP_SECONDS] [NAMES_FILE]
#
# NAMES_FILE (optional): mutant names, one per line (e.g. the survivors of an earlier run, as
# `mutmut results` prints them before the colon): only those are run.
#
# Runs in a private copy of the tree (default /tmp/objguided-mutmut): the shared working tree is never
# mutated, and mutmut's configuration lives in that copy's setup.cfg (the project's pyproject.toml has no
# [tool.mutmut] section, so mutmut falls back to setup.cfg). One worker, one torch thread: the machine
# is shared. mutmut itself must be installed in the venv: .venv/bin/python -m pip install mutmut==3.8.1
#
# The golden test (tests/test_paper_golden.py, ResNet-50, ~30 s) is left out of the mutmut run to keep it
# within a few hours; benchmarks/paper_mutations.py runs it against the hand mutations.
# Results: `mutmut results` (survivors) and the summary printed at the end; write them up in
# benchmarks/results/mutation_models.md.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/objguided-mutmut}"
CAP="${2:-7200}"
NAMES="${3:-}"
MUTMUT="$REPO/.venv/bin/mutmut"
[ -x "$MUTMUT" ] || { echo "mutmut is not installed: $REPO/.venv/bin/python -m pip install mutmut==3.8.1" >&2; exit 2; }

rm -rf "$WORK"
mkdir -p "$WORK"
cp -a "$REPO/objguided" "$REPO/methods" "$REPO/tests" "$REPO/pyproject.toml" "$WORK/"
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +
cat > "$WORK/setup.cfg" <<'EOF'
[mutmut]
source_paths = objguided
only_mutate = objguided/models/*
also_copy =
    methods/
pytest_add_cli_args =
    -p
    no:xdist
    -p
    no:cacheprovider
    -q
pytest_add_cli_args_test_selection =
    tests/test_models_losses.py
    tests/test_models_post.py
    tests/test_models_roi.py
    tests/test_models_targets.py
    tests/test_paper_architecture.py
    tests/test_paper_losses.py
    tests/test_paper_roi.py
    tests/test_paper_augment.py
    tests/test_paper_targets.py
    tests/test_paper_postprocess.py
use_git_change_detection = false
EOF

cd "$WORK"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
status=0
if [ -n "$NAMES" ]; then
  mapfile -t names < <(sed 's/:.*//; s/^ *//' "$NAMES" | grep -v '^$')
  timeout "$CAP" "$MUTMUT" run --max-children 1 "${names[@]}" > "$WORK/run.log" 2>&1 || status=$?
else
  timeout "$CAP" "$MUTMUT" run --max-children 1 > "$WORK/run.log" 2>&1 || status=$?
fi
[ "$status" = 124 ] && echo "time cap of $CAP s reached: the run is partial" >&2
"$MUTMUT" export-cicd-stats > /dev/null 2>&1 || true
[ -f mutants/mutmut-cicd-stats.json ] && cat mutants/mutmut-cicd-stats.json
"$MUTMUT" results > "$WORK/survivors.txt" 2>&1 || true
echo "survivors and not-checked mutants: $WORK/survivors.txt ($(wc -l < "$WORK/survivors.txt") lines)"
echo "inspect one: (cd $WORK && $MUTMUT show <name>)"
