#!/usr/bin/env bash
# Create or refresh this checkout's virtual environment at $1 (default .venv).
#
# Every checkout gets its own .venv folder, with this checkout installed editable in it, so it always runs
# its own code. The packages themselves (about 6 GB with CUDA torch) are installed once per machine into a
# shared base, ${OBJGUIDED_VENV_CACHE:-~/.cache/objguided/venvs}/<hash of requirements, Python, arch>,
# which never holds the project; .venv reaches the base's site-packages through a .pth file, and the base's
# commands (snakemake, pytest, ...) are copied into .venv/bin with .venv's interpreter. A fresh clone on a
# machine whose base exists gets its .venv in seconds. OBJGUIDED_VENV_CACHE=off installs everything into
# .venv itself instead.
#
# OBJGUIDED_PEERS=1 uses a base that also holds the `peers` extra (requirements-peers.txt: Cellpose 3,
# StarDist on TensorFlow; about 1.9 GB more), so the core base stays lean. Bases are kept per requirements
# hash: delete ~/.cache/objguided/venvs/<hash> to reclaim an old one.
set -euo pipefail
venv=${1:-.venv}
py=${PYTHON:-python3.11}
peers=${OBJGUIDED_PEERS:-0}
command -v "$py" >/dev/null || { echo "make_env: $py not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
here=$(pwd -P)

quiet_pip() {  # pip warns once per package about this machine's local index folders; keep real errors
  "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

install_packages() {  # $1: a new venv to fill with the pinned requirements (never the project)
  "$py" -m venv "$1"
  local reqs=(-r requirements.txt)
  if [ "$peers" = 1 ]; then reqs+=(-r requirements-peers.txt); fi
  quiet_pip "$1/bin/pip" install --quiet "${reqs[@]}"
  touch "$1/.objguided-complete"
}

site_packages() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

# A base's console script ($1) for the interpreter $2: a shebang cannot hold a space, so under such a path the
# script starts through sh, as pip's own launchers do
rewrap_script() {
  case "$2" in
    *" "*) printf '#!/bin/sh\n%sexec%s "%s" "$0" "$@"\n%s\n' "'''" "'" "$2" "' '''" ;;
    *) printf '#!%s\n' "$2" ;;
  esac
  tail -n +2 "$1"
}

# $1 base, $2 venv: a venv of this checkout's own over the base's packages
layer_over_base() {
  local base=$1 venv_abs
  rm -rf "$2"
  "$py" -m venv --without-pip "$2"
  venv_abs=$(cd "$2" && pwd -P)
  # addsitedir (not a bare path line) so that the base's own .pth files are processed too; it appends, so
  # what is installed in .venv itself (this checkout) comes first on sys.path
  echo "import site; site.addsitedir('$(site_packages "$base")')" \
    > "$(site_packages "$venv_abs")/objguided_base.pth"
  local script name
  for script in "$base"/bin/*; do
    name=$(basename "$script")
    [ -e "$venv_abs/bin/$name" ] && continue   # python, activate: the venv's own
    if head -n 1 "$script" | grep -qF "#!$base/bin/python"; then
      rewrap_script "$script" "$venv_abs/bin/python" > "$venv_abs/bin/$name"
      chmod +x "$venv_abs/bin/$name"
    fi
  done
  echo "$base" > "$venv_abs/.objguided-base"
}

cache=${OBJGUIDED_VENV_CACHE:-$HOME/.cache/objguided/venvs}
if [ -L "$venv" ]; then rm "$venv"; fi   # the old layout linked .venv to a shared environment
if [ "$cache" = off ]; then
  has_peers=$([ -f "$venv/.objguided-peers" ] && echo 1 || echo 0)
  if [ ! -f "$venv/.objguided-complete" ] || [ "$has_peers" != "$peers" ]; then
    rm -rf "$venv"; install_packages "$venv"
    if [ "$peers" = 1 ]; then touch "$venv/.objguided-peers"; fi
  fi
else
  # "base2": bases of the old layout held an editable install of whichever checkout built them last
  key=$( (echo base2; cat requirements.txt; [ "$peers" = 1 ] && cat requirements-peers.txt; "$py" --version; uname -m) \
        | sha256sum | cut -c1-16)
  base=${OBJGUIDED_BASE:-$cache/$key}   # OBJGUIDED_BASE: use this existing base (tests of this script)
  mkdir -p "$cache"
  exec 9>"$cache/$key.lock"
  flock 9   # two checkouts building the same base at once wait for each other
  if [ ! -f "$base/.objguided-complete" ]; then
    echo "make_env: creating $base (first time on this machine: a few minutes)" >&2
    rm -rf "$base"
    install_packages "$base"
  fi
  flock -u 9
  if [ "$(cat "$venv/.objguided-base" 2>/dev/null)" != "$base" ]; then
    layer_over_base "$base" "$venv"
  fi
fi

# Asked from / so that the current folder on sys.path cannot pass for an installed checkout; objguided_methods
# (methods/, mapped by pyproject.toml) too, so that an install made before that mapping is redone.
venv_python=$(cd "$venv" && pwd -P)/bin/python
installed=$(cd / && "$venv_python" -c \
  'import objguided, objguided_methods, pathlib; print(pathlib.Path(objguided.__file__).resolve().parents[1])' \
  2>/dev/null || true)
if [ "$installed" != "$here" ] || [ ! -x "$venv/bin/objguided" ]; then
  quiet_pip "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
fi
echo "$here" > "$venv/.objguided-checkout"
