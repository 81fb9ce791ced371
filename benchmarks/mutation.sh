#!/usr/bin/env bash
# Mutation testing (mutmut 3) of objguided/models, or of the method's data path, against the paper pins.
#
#   benchmarks/mutation.sh [WORKDIR] [TIME_CAP_SECONDS] [NAMES_FILE] [TARGET]
#
# TARGET (default `models`):
#   models     every objguided/models/*.py, against the models tests and the paper pins of the network
#              (test_models_*, test_paper_{architecture,losses,roi,augment,targets,postprocess,inference_*});
#   data_path  objguided/data/augment.py, methods/objguided.py (training-sample encoding, predict path)
#              and methods/base.py (the samples' collate, crop_or_letterbox, rgb3, shared by the
#              methods), against test_augment, test_paper_augment, test_paper_data_*, the method's
#              tests (test_objguided_method, less its two training tests unless DESELECT="") and
#              test_paper_mends' stretched-test-image test;
#   or a space-separated list of repository-relative files to mutate, e.g.
#   "objguided/models/postprocess.py objguided/models/preprocess.py": run with the `models` tests when
#   the first is under objguided/models, else with the `data_path` tests. The environment variable TESTS
#   (space-separated pytest paths / node ids) replaces the test set.
#
# NAMES_FILE (optional, "" for none): mutant names, one per line (e.g. the survivors of an earlier run,
# as `mutmut results` prints them before the colon): only those are run.
#
# Runs in a private copy of the tree (default /tmp/objguided-mutmut): the shared working tree is never
# mutated, and mutmut's configuration lives in that copy's setup.cfg (the project's pyproject.toml has no
# [tool.mutmut] section, so mutmut falls back to setup.cfg). One worker, one torch thread, nice 10: the
# machine is shared. mutmut itself must be installed in the venv: .venv/bin/python -m pip install mutmut==3.8.1
#
# The golden network tests (tests/test_paper_golden.py, ResNet-50, ~30 s) are left out of the models run
# to keep it within a few hours; benchmarks/paper_mutations.py runs them against the hand mutations.
# Results: `mutmut results` (survivors) and the summary printed at the end; benchmarks/mutation_survivors.py
# sorts the survivors; write them up in benchmarks/results/mutation_models.md / mutation_data_path.md.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/objguided-mutmut}"
CAP="${2:-7200}"
NAMES="${3:-}"
TARGET="${4:-models}"
MUTMUT="$REPO/.venv/bin/mutmut"
[ -x "$MUTMUT" ] || { echo "mutmut is not installed: $REPO/.venv/bin/python -m pip install mutmut==3.8.1" >&2; exit 2; }

cd "$REPO"
models_tests=(tests/test_models_{losses,post,roi,targets}.py
  tests/test_paper_{architecture,losses,roi,augment,targets,postprocess}.py
  $(compgen -G "tests/test_paper_inference_*.py" || true))
data_tests=(tests/test_augment.py tests/test_paper_augment.py tests/test_objguided_method.py
  tests/test_paper_mends.py::test_test_images_are_stretched_to_the_input_size_and_letterbox_is_an_option
  $(compgen -G "tests/test_paper_data_*.py" || true))
# the method's two training tests take minutes each on a shared 2-core machine; DESELECT="" runs them too
DESELECT="${DESELECT-tests/test_objguided_method.py::test_short_training_writes_checkpoint_and_log_and_resumes tests/test_objguided_method.py::test_learns_to_segment_its_training_images}"
case "$TARGET" in
  models) mutate=("objguided/models/*") ;;
  data_path) mutate=(objguided/data/augment.py methods/objguided.py methods/base.py) ;;
  *) read -r -a mutate <<< "$TARGET" ;;
esac
for f in "${mutate[@]}"; do
  compgen -G "$f" > /dev/null || { echo "TARGET: $f is not a file of $REPO (give models, data_path or repository-relative .py paths)" >&2; exit 2; }
done
case "${mutate[0]}" in
  objguided/models/*) tests=("${models_tests[@]}") ;;
  *) tests=("${data_tests[@]}") ;;
esac
# TESTS="tests/a.py tests/b.py::test_c": a narrower test set, for short re-runs (fewer tests can only
# leave more survivors, never hide one)
[ -n "${TESTS:-}" ] && read -r -a tests <<< "$TESTS"

rm -rf "$WORK"
mkdir -p "$WORK"
# -L: links inside the packages (objguided/schemas -> ../workflow/schemas) become real copies
cp -RL --preserve=all "$REPO/objguided" "$REPO/tests" "$REPO/pyproject.toml" "$WORK/"
# methods/ installs as the package objguided_methods (pyproject's package-dir), which the editable install
# resolves to the shared tree: under its package name here, mutmut's mutants/ copy is the one imported
cp -RL --preserve=all "$REPO/methods" "$WORK/objguided_methods"
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +
{
  printf '[mutmut]\nsource_paths =\n    objguided\n    objguided_methods\nonly_mutate =\n'
  printf '    %s\n' "${mutate[@]/#methods\//objguided_methods/}"
  printf 'pytest_add_cli_args =\n    -p\n    no:xdist\n    -p\n    no:cacheprovider\n    -q\n'
  for d in ${DESELECT:-}; do printf '    --deselect\n    %s\n' "$d"; done
  printf 'pytest_add_cli_args_test_selection =\n'
  printf '    %s\n' "${tests[@]}"
  printf 'use_git_change_detection = false\n'
} > "$WORK/setup.cfg"
echo "mutating: ${mutate[*]}"
echo "tests: ${tests[*]}"

cd "$WORK"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
status=0
if [ -n "$NAMES" ]; then
  mapfile -t names < <(sed 's/:.*//; s/^ *//' "$NAMES" | grep -v '^$')
  timeout "$CAP" nice -n 10 "$MUTMUT" run --max-children 1 "${names[@]}" > "$WORK/run.log" 2>&1 || status=$?
else
  timeout "$CAP" nice -n 10 "$MUTMUT" run --max-children 1 > "$WORK/run.log" 2>&1 || status=$?
fi
[ "$status" = 124 ] && echo "time cap of $CAP s reached: the run is partial" >&2
"$MUTMUT" export-cicd-stats > /dev/null 2>&1 || true
[ -f mutants/mutmut-cicd-stats.json ] && cat mutants/mutmut-cicd-stats.json
"$MUTMUT" results > "$WORK/survivors.txt" 2>&1 || true
echo "survivors and not-checked mutants: $WORK/survivors.txt ($(wc -l < "$WORK/survivors.txt") lines)"
echo "inspect one: (cd $WORK && $MUTMUT show <name>)"
