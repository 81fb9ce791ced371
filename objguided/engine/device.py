"""Device choice: one job per GPU through exclusive file-lock slots, keyed by the physical device.

Snakemake's ``--resources gpu=N`` only counts GPUs; it does not say which one a job should use. Each
GPU job therefore claims a free slot itself: one lock file per *physical* GPU (``gpu-<id>.lock``) in a
folder shared by all jobs on the machine, held (an ``flock``) for the job's lifetime. The kernel releases
the lock when the holder dies, so a killed job never leaks its slot.

The slot is named after the device, not after the index the job sees it under. A scheduler that gives each
job its own GPU (SLURM's gres sets ``CUDA_VISIBLE_DEVICES``) makes every job see its GPU as ``cuda:0``;
keyed by that index, two jobs on different GPUs of one node would wait for each other. The physical id is
the GPU's UUID where torch sees a real GPU, else SLURM's node-wide index of the job's GPUs
(``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS``), else the ``CUDA_VISIBLE_DEVICES`` entry, else the index itself
(all GPUs visible). So jobs given different GPUs never wait; two jobs that were given the same GPU (or a
plain box under ``--resources gpu=N``) still take turns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from filelock import FileLock, Timeout

from objguided.errors import ConfigError

log = logging.getLogger(__name__)

#: environment variables: the lock folder, and a fake GPU count for tests and GPU-less dry runs (the fake GPUs
#: take their physical ids from the environment, as real ones without a UUID do)
LOCK_DIR_ENV = "OBJGUIDED_GPU_LOCK_DIR"
FAKE_SLOTS_ENV = "OBJGUIDED_FAKE_GPU_SLOTS"
#: where a scheduler says which of the node's GPUs a job holds, most specific first
SCHEDULER_GPU_ENVS = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS")
POLL_SECONDS = 0.2


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"objguided-gpu-slots-{os.getuid()}")


def _entries(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def ids_from_environment(n: int, environ=None) -> list[str]:
    """Physical ids of the ``n`` visible GPUs from the environment alone (no driver needed).

    >>> ids_from_environment(2, {})
    ['0', '1']
    >>> ids_from_environment(1, {"CUDA_VISIBLE_DEVICES": "3"})
    ['3']
    >>> ids_from_environment(1, {"CUDA_VISIBLE_DEVICES": "0", "SLURM_STEP_GPUS": "5"})  # renumbered by cgroups
    ['5']
    """
    environ = os.environ if environ is None else environ
    for name in SCHEDULER_GPU_ENVS:
        entries = _entries(environ.get(name))
        if len(entries) == n:
            return entries
    visible = _entries(environ.get("CUDA_VISIBLE_DEVICES"))
    if len(visible) >= n:
        return visible[:n]
    return [str(i) for i in range(n)]


def _torch_uuids(torch, n: int) -> list[str] | None:
    try:
        uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(n)]
    except (AttributeError, RuntimeError):  # an old torch, or a driver that does not say
        return None
    return [u if u.startswith(("GPU-", "MIG-")) else f"GPU-{u}" for u in uuids] if all(uuids) else None


def visible_gpus() -> list[str]:
    """One physical id per GPU this process sees, in the order torch numbers them (``cuda:0`` first)."""
    if os.environ.get(FAKE_SLOTS_ENV):
        return ids_from_environment(int(os.environ[FAKE_SLOTS_ENV]))
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        return []
    return _torch_uuids(torch, n) or ids_from_environment(n)


def gpu_count() -> int:
    return len(visible_gpus())


def lock_name(device_id: str) -> str:
    """The slot's file name: the physical id with anything but ``[A-Za-z0-9._-]`` (MIG ids hold ``/``) as ``_``."""
    return f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', device_id)}.lock"


@contextlib.contextmanager
def claim_slot(slots: int | Sequence[str], lock_dir: str | Path | None = None,
               timeout: float | None = None) -> Iterator[int]:
    """Hold one exclusive slot for the duration of the block and yield its index; wait while all are taken.

    ``slots`` is the visible devices' physical ids (slot ``i`` is device ``i`` as this process sees it), or a
    count ``n`` for the ids ``"0"`` ... ``"n-1"``.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with claim_slot(2, folder) as first:
    ...     with claim_slot(2, folder) as second:
    ...         (first, second)
    (0, 1)
    >>> with claim_slot(["GPU-a"], folder) as mine:   # another job's GPU: no wait on its slot
    ...     with claim_slot(["GPU-b"], folder) as theirs:
    ...         (mine, theirs)
    (0, 0)
    """
    ids = [str(i) for i in range(slots)] if isinstance(slots, int) else [str(s) for s in slots]
    if not ids:
        raise ValueError("claim_slot needs at least one slot")
    lock_dir = Path(lock_dir or default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for slot, device_id in enumerate(ids):
            lock = FileLock(lock_dir / lock_name(device_id), thread_local=False)
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
            raise TimeoutError(f"no free GPU slot of {ids} in {lock_dir} after {timeout} s")
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
    devices = visible_gpus()
    if not devices:
        if requested == "cuda":
            raise ConfigError("device: 'cuda' asked for, but torch sees no GPU; use 'auto' or 'cpu'")
        yield "cpu"
        return
    with claim_slot(devices, lock_dir) as slot:
        log.info("claimed GPU cuda:%d (physical %s) of %d visible", slot, devices[slot], len(devices))
        yield f"cuda:{slot}"
