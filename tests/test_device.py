"""GPU slot claims: concurrent jobs never share a device slot, and a killed holder frees its slot."""

import json
import multiprocessing as mp
import os
import signal
import time

import pytest

from objguided.engine.device import FAKE_SLOTS_ENV, LOCK_DIR_ENV, claim_device, claim_slot


def _job(lock_dir, log_path, hold_seconds):
    with claim_slot(4, lock_dir) as slot:
        start = time.monotonic()
        time.sleep(hold_seconds)
        end = time.monotonic()
    with open(log_path, "a") as log:
        log.write(json.dumps({"pid": os.getpid(), "slot": slot, "start": start, "end": end}) + "\n")


def _overlaps(intervals):
    intervals = sorted(intervals)
    return any(b_start < a_end for (a_start, a_end), (b_start, _) in zip(intervals, intervals[1:]))


@pytest.mark.parametrize("n_jobs", [4, 10])
def test_concurrent_jobs_never_share_a_slot(tmp_path, n_jobs):
    log_path = tmp_path / "claims.jsonl"
    ctx = mp.get_context("spawn")
    jobs = [ctx.Process(target=_job, args=(tmp_path / "locks", log_path, 0.4)) for _ in range(n_jobs)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
        assert job.exitcode == 0
    claims = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(claims) == n_jobs
    by_slot = {}
    for claim in claims:
        by_slot.setdefault(claim["slot"], []).append((claim["start"], claim["end"]))
    assert set(by_slot) <= {0, 1, 2, 3}
    for slot, intervals in by_slot.items():
        assert not _overlaps(intervals), f"slot {slot} held twice at once: {intervals}"
    if n_jobs == 4:
        assert len(by_slot) == 4  # four jobs, four free slots: each gets its own at once


def _hold_forever(lock_dir, ready_path):
    with claim_slot(1, lock_dir):
        ready_path.write_text("held")
        time.sleep(600)


def test_killed_holder_frees_its_slot(tmp_path):
    ready = tmp_path / "ready"
    holder = mp.get_context("spawn").Process(target=_hold_forever, args=(tmp_path / "locks", ready))
    holder.start()
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(TimeoutError):
        with claim_slot(1, tmp_path / "locks", timeout=0.3):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    with claim_slot(1, tmp_path / "locks", timeout=5) as slot:
        assert slot == 0


def test_claim_device_falls_back_to_cpu_without_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv(FAKE_SLOTS_ENV, "0")
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    with claim_device("auto") as device:
        assert device == "cpu"
    with claim_device("cpu") as device:
        assert device == "cpu"


def test_claim_device_hands_out_distinct_fake_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv(FAKE_SLOTS_ENV, "2")
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    with claim_device("auto") as first, claim_device("auto") as second:
        assert {first, second} == {"cuda:0", "cuda:1"}
