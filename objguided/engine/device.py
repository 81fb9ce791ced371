"""Device choice: one job per GPU through exclusive file-lock slots.

Snakemake's ``--resources gpu=N`` only counts GPUs; it does not say which one a job should use. Each
GPU job therefore claims a free slot itself: slot ``i`` is the lock file ``gpu<i>.lock`` in a folder
shared by all jobs on the machine, held (an ``flock``) for the job's lifetime. The kernel releases the
lock when the holder dies, so a killed job never leaks its slot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from objguided.errors import ConfigError

log = logging.getLogger(__name__)

#: environment variables: the lock folder, and a fake slot count for tests and GPU-less dry runs
LOCK_DIR_ENV = "OBJGUIDED_GPU_LOCK_DIR"
FAKE_SLOTS_ENV = "OBJGUIDED_FAKE_GPU_SLOTS"
POLL_SECONDS = 0.2


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"objguided-gpu-slots-{os.getuid()}")


def gpu_count() -> int:
    if os.environ.get(FAKE_SLOTS_ENV):
        return int(os.environ[FAKE_SLOTS_ENV])
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def claim_slot(n_slots: int, lock_dir: str | Path | None = None, timeout: float | None = None) -> Iterator[int]:
    """Hold one of ``n_slots`` exclusive slots for the duration of the block; wait while all are taken.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with claim_slot(2, folder) as first:
    ...     with claim_slot(2, folder) as second:
    ...         (first, second)
    (0, 1)
    """
    if n_slots < 1:
        raise ValueError("claim_slot needs at least one slot")
    lock_dir = Path(lock_dir or default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for slot in range(n_slots):
            lock = FileLock(lock_dir / f"gpu{slot}.lock", thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield slot
            finally:
                lock.release()
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot of {n_slots} in {lock_dir} after {timeout} s")
        time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def claim_device(requested: str = "auto", lock_dir: str | Path | None = None) -> Iterator[str]:
    """Yield the torch device string a job should use.

    ``cpu`` never locks. ``auto`` takes a free GPU slot when GPUs exist, else the CPU. ``cuda`` insists
    on a GPU. ``cuda:<i>`` uses that device without a slot (the caller knows what it is doing).
    """
    if requested == "cpu" or requested.startswith("cuda:"):
        yield requested
        return
    if requested not in ("auto", "cuda"):
        raise ConfigError(f"device: '{requested}' is not one of auto, cpu, cuda, cuda:<index>")
    n = gpu_count()
    if n == 0:
        if requested == "cuda":
            raise ConfigError("device: 'cuda' asked for, but torch sees no GPU; use 'auto' or 'cpu'")
        yield "cpu"
        return
    with claim_slot(n, lock_dir) as slot:
        log.info("claimed GPU slot %d of %d", slot, n)
        yield f"cuda:{slot}"
