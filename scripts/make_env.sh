#!/usr/bin/env bash
# Create or reuse the project's virtual environment at $1 (default .venv) and install this checkout in it.
#
# The packages (about 6 GB with CUDA torch) are installed once per (requirements.txt, Python) into
# ${OBJGUIDED_VENV_CACHE:-~/.cache/objguided/venvs}/<hash>, and .venv links there, so a fresh clone on the
# same machine (CI) reuses them. The project itself is installed editable from the checkout that asks
# (seconds), so the environment always runs that checkout's code. OBJGUIDED_VENV_CACHE=off builds a plain
# .venv folder instead.
#
# OBJGUIDED_PEERS=1 also installs the `peers` extra (requirements-peers.txt: Cellpose 3, StarDist on
# TensorFlow; about 1.9 GB more) into its own cached environment, so the core one stays lean; .venv links
# to the environment last asked for.
set -euo pipefail
venv=${1:-.venv}
py=${PYTHON:-python3.11}
peers=${OBJGUIDED_PEERS:-0}
command -v "$py" >/dev/null || { echo "make_env: $py not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }

quiet_pip() {  # pip warns once per package about this machine's local index folders; keep real errors
  "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

install_packages() {
  "$py" -m venv "$1"
  if [ "$peers" = 1 ]; then
    quiet_pip "$1/bin/pip" install --quiet -r requirements.txt -r requirements-peers.txt
  else
    quiet_pip "$1/bin/pip" install --quiet -r requirements.txt
  fi
  touch "$1/.objguided-complete"
}

cache=${OBJGUIDED_VENV_CACHE:-$HOME/.cache/objguided/venvs}
if [ "$cache" = off ]; then
  has_peers=$([ -f "$venv/.objguided-peers" ] && echo 1 || echo 0)
  if [ ! -f "$venv/.objguided-complete" ] || [ "$has_peers" != "$peers" ]; then
    rm -rf "$venv"; install_packages "$venv"
    if [ "$peers" = 1 ]; then touch "$venv/.objguided-peers"; fi
  fi
else
  key=$( (cat requirements.txt; [ "$peers" = 1 ] && cat requirements-peers.txt; "$py" --version; uname -m) \
        | sha256sum | cut -c1-16)
  target=$cache/$key
  mkdir -p "$cache"
  exec 9>"$cache/$key.lock"
  flock 9   # two checkouts building the same environment at once wait for each other
  if [ ! -f "$target/.objguided-complete" ]; then
    echo "make_env: creating $target (first time on this machine: a few minutes)" >&2
    rm -rf "$target"
    install_packages "$target"
  fi
  if [ -e "$venv" ] && [ ! -L "$venv" ]; then rm -rf "$venv"; fi
  ln -sfn "$target" "$venv"
fi

here=$(pwd -P)
installed=$("$venv/bin/python" -c 'import objguided, pathlib; print(pathlib.Path(objguided.__file__).resolve().parents[1])' 2>/dev/null || true)
if [ "$installed" != "$here" ] || [ ! -x "$venv/bin/objguided" ]; then
  quiet_pip "$venv/bin/pip" install --quiet --no-deps --no-build-isolation -e .
fi
