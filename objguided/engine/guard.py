"""Guards every CLI process takes before it works: it runs its own checkout's code, and it does not outlive
the Snakemake that started it.

- **Own code.** ``make env`` writes the checkout a ``.venv`` belongs to into ``.venv/.objguided-checkout``,
  and the workflow puts its own checkout into ``OBJGUIDED_CHECKOUT`` for its jobs. When the ``objguided``
  package that was imported lies elsewhere (``python -m objguided`` run from inside another clone puts
  that clone first on ``sys.path``), the process stops before any work and says which two folders differ.
- **No orphans.** The workflow puts its own process id into ``OBJGUIDED_WATCH_PID``. A job whose
  Snakemake is killed (its shell survives it, so the job's parent does not die) would otherwise go on
  writing results that a later ``snakemake --unlock`` run calls finished; the job watches that process
  (a pidfd, so a reused pid cannot fool it) and ends itself with SIGTERM when it is gone. Checkpoints are
  written atomically, so a rerun resumes.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path

from objguided.errors import ConfigError

log = logging.getLogger(__name__)

CHECKOUT_VAR = "OBJGUIDED_CHECKOUT"
WATCH_VAR = "OBJGUIDED_WATCH_PID"
VENV_MARKER = ".objguided-checkout"  # written by scripts/make_env.sh


def running_checkout() -> Path:
    """The folder whose ``objguided`` package this process imported."""
    import objguided

    return Path(objguided.__file__).resolve().parents[1]


def check_own_checkout(environ: dict | None = None, prefix: str | None = None) -> None:
    """Raise ConfigError when this process runs another checkout's code than its workflow's or its .venv's."""
    environ = os.environ if environ is None else environ
    here = running_checkout()
    if not (here / "Snakefile").is_file():
        return  # an installed copy (`pip install .`): no checkout of its own to tell from the workflow's
    wanted = environ.get(CHECKOUT_VAR)
    if wanted and Path(wanted).resolve() != here:
        raise ConfigError(
            f"this job would run the objguided code of {here}, but its workflow is {Path(wanted).resolve()}; "
            f"run Snakemake with that checkout's own environment ({Path(wanted).resolve() / '.venv'}/bin/snakemake)")
    marker = Path(prefix or sys.prefix) / VENV_MARKER
    try:
        owner = Path(marker.read_text().strip()).resolve()
    except OSError:
        return  # an environment not made by make_env (conda, pip install .): nothing to compare with
    if owner != here:
        raise ConfigError(
            f"the environment {Path(prefix or sys.prefix)} belongs to {owner}, but this process imported objguided "
            f"from {here} (the current folder comes first on sys.path with `python -m`); run "
            f"`python -P -m objguided ...` or {Path(prefix or sys.prefix) / 'bin' / 'objguided'}, or run from "
            f"another folder")


def stop_when_gone(pid: int, poll_seconds: float = 2.0) -> threading.Thread | None:
    """End this process with SIGTERM once process ``pid`` has exited (at once if it already has).

    Returns the watching daemon thread (None when ``pid`` is this process itself).
    """
    if pid == os.getpid():
        return None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        _stop(pid)
        return None
    except (OSError, AttributeError):  # no pidfd (old kernel, or not Linux): poll the pid instead
        fd = None
    thread = threading.Thread(target=_watch, args=(pid, fd, poll_seconds), name="objguided-watch", daemon=True)
    thread.start()
    return thread


def _watch(pid: int, fd: int | None, poll_seconds: float) -> None:
    if fd is not None:
        select.select([fd], [], [])  # readable once the process has exited
    else:
        while _alive(pid):
            time.sleep(poll_seconds)
    _stop(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but another user's
    return True


def _stop(pid: int) -> None:
    print(f"objguided: the Snakemake that started this job (pid {pid}) is gone; stopping (a rerun resumes)",
          file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def job_environment(checkout: str | Path) -> dict[str, str]:
    """What the workflow exports to its jobs: its checkout, and its own (Snakemake's) process id to watch."""
    return {CHECKOUT_VAR: str(Path(checkout).resolve()), WATCH_VAR: str(os.getpid())}


def guard_process() -> None:
    """Both guards, as the CLI takes them before any verb runs."""
    check_own_checkout()
    watched = os.environ.get(WATCH_VAR)
    if watched:
        try:
            pid = int(watched)
        except ValueError:
            raise ConfigError(f"{WATCH_VAR}={watched!r} is not a process id; unset it") from None
        stop_when_gone(pid)
