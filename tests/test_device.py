"""GPU slot claims: concurrent jobs never share a device slot, and a killed holder frees its slot."""

import contextlib
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


def _claim_and_log(lock_dir, log_path, hold_seconds, forever):
    """Claim one of 4 slots; log the claim when it starts (a killed holder leaves its start only)."""
    with claim_slot(4, lock_dir) as slot:
        start = time.monotonic()
        with open(log_path, "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "slot": slot, "event": "start", "t": start}) + "\n")
        time.sleep(600 if forever else hold_seconds)
        end = time.monotonic()
    with open(log_path, "a") as log:
        log.write(json.dumps({"pid": os.getpid(), "slot": slot, "event": "end", "t": end}) + "\n")


def test_32_claims_on_4_slots_with_killed_holders(tmp_path):
    """32 concurrent processes claim 4 slots; 6 of them are SIGKILLed while holding one. No slot is ever
    held twice at once (a killed holder's hold ends at its kill), every survivor gets a slot, and after
    it all the 4 slots are free again (nothing leaked)."""
    lock_dir, log_path = tmp_path / "locks", tmp_path / "claims.jsonl"
    ctx = mp.get_context("fork")  # 32 spawned interpreters would take most of a minute on 2 cores
    doomed = set(range(0, 32, 6))  # 0, 6, 12, 18, 24, 30: hold forever until killed
    jobs = [ctx.Process(target=_claim_and_log, args=(lock_dir, log_path, 0.05, i in doomed)) for i in range(32)]
    for job in jobs:
        job.start()
    killed_at = {}
    deadline = time.monotonic() + 120
    while len(killed_at) < len(doomed):
        assert time.monotonic() < deadline, "the doomed holders never all got a slot"
        started = ({json.loads(line)["pid"] for line in log_path.read_text().splitlines()}
                   if log_path.exists() else set())
        for i in doomed:
            pid = jobs[i].pid
            if pid in started and pid not in killed_at:
                killed_at[pid] = time.monotonic()  # its hold ends after this: no one may claim its slot before
                os.kill(pid, signal.SIGKILL)
                jobs[i].join(10)
        time.sleep(0.02)
    for i, job in enumerate(jobs):
        job.join(120)
        assert job.exitcode == (-signal.SIGKILL if i in doomed else 0), f"job {i} exit code {job.exitcode}"

    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    holds: dict[int, list] = {}
    for e in events:
        holds.setdefault(e["pid"], []).append(e)
    assert len(holds) == 32  # every process got a slot once
    by_slot: dict[int, list] = {}
    for pid, evs in holds.items():
        start = next(e for e in evs if e["event"] == "start")
        ends = [e["t"] for e in evs if e["event"] == "end"]
        end = ends[0] if ends else killed_at[pid]  # the kernel frees a killed holder's lock when it dies
        by_slot.setdefault(start["slot"], []).append((start["t"], end))
    assert set(by_slot) <= {0, 1, 2, 3}
    for slot, intervals in by_slot.items():
        assert not _overlaps(intervals), f"slot {slot} held twice at once: {sorted(intervals)}"
    # nothing leaked: four claims at once succeed without waiting
    with contextlib.ExitStack() as stack:
        slots = {stack.enter_context(claim_slot(4, lock_dir, timeout=1)) for _ in range(4)}
    assert slots == {0, 1, 2, 3}
