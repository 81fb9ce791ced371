"""GPU slots respect what the scheduler gave each job (issue 18), all on the CPU with simulated visibility.

A scheduler that hands each job its own GPU narrows ``CUDA_VISIBLE_DEVICES`` (SLURM's gres sets it and
SLURM_STEP_GPUS / SLURM_JOB_GPUS), so every job sees its GPU as ``cuda:0``. Slots are keyed by the physical
device: jobs given different GPUs claim at once; jobs given the same GPU still take turns."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from types import SimpleNamespace

import pytest

from objguided.engine import device as device_mod
from objguided.engine.device import (
    FAKE_SLOTS_ENV,
    LOCK_DIR_ENV,
    claim_device,
    claim_slot,
    ids_from_environment,
    lock_name,
    visible_gpus,
)

HOLD = 1.0


def _job(env: dict, barrier, results, key):
    """One simulated GPU job: the scheduler's environment, then claim_device('auto') for HOLD seconds."""
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        os.environ.pop(name, None)
    os.environ.update(env)
    barrier.wait(30)
    asked = time.monotonic()
    with claim_device("auto") as dev:
        start = time.monotonic()
        time.sleep(HOLD)
        end = time.monotonic()
    results[key] = (dev, asked, start, end)


def run_jobs(tmp_path, envs: list[dict]) -> list[tuple]:
    """Start one process per environment at once; each job's (device, asked, start, end)."""
    ctx = mp.get_context("fork")
    common = {FAKE_SLOTS_ENV: "1", LOCK_DIR_ENV: str(tmp_path / "locks")}
    with ctx.Manager() as manager:
        results, barrier = manager.dict(), manager.Barrier(len(envs))
        jobs = [ctx.Process(target=_job, args=({**common, **env}, barrier, results, i)) for i, env in enumerate(envs)]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join(60)
            assert job.exitcode == 0
        return [results[i] for i in range(len(envs))]


def overlap(a, b) -> bool:
    return a[2] < b[3] and b[2] < a[3]


def waited(job) -> float:
    return job[2] - job[1]


@pytest.mark.parametrize("envs", [
    [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}],  # SLURM gres without cgroups
    # with ConstrainDevices, SLURM renumbers each job's GPU to 0; its node-wide index is in SLURM_*_GPUS
    [{"CUDA_VISIBLE_DEVICES": "0", "SLURM_STEP_GPUS": "0"}, {"CUDA_VISIBLE_DEVICES": "0", "SLURM_STEP_GPUS": "1"}],
    [{"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "2"}, {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "3"}],
    [{"CUDA_VISIBLE_DEVICES": "GPU-aaa"}, {"CUDA_VISIBLE_DEVICES": "GPU-bbb"}],
], ids=["cuda-visible", "slurm-step-gpus", "slurm-job-gpus", "uuids"])
def test_jobs_given_different_gpus_claim_at_once(tmp_path, envs):
    first, second = run_jobs(tmp_path, envs)
    assert first[0] == second[0] == "cuda:0"  # each sees its own GPU as cuda:0
    assert overlap(first, second), f"one job waited for the other's slot: {first}, {second}"
    assert max(waited(first), waited(second)) < HOLD / 2


@pytest.mark.parametrize("envs", [
    [{"CUDA_VISIBLE_DEVICES": "1"}, {"CUDA_VISIBLE_DEVICES": "1"}],
    [{"CUDA_VISIBLE_DEVICES": "0", "SLURM_STEP_GPUS": "1"}, {"CUDA_VISIBLE_DEVICES": "0", "SLURM_STEP_GPUS": "1"}],
], ids=["cuda-visible", "slurm-step-gpus"])
def test_jobs_given_the_same_gpu_take_turns(tmp_path, envs):
    first, second = run_jobs(tmp_path, envs)
    assert not overlap(first, second), f"two jobs held one GPU at once: {first}, {second}"
    assert max(waited(first), waited(second)) >= HOLD * 0.8


def test_a_plain_box_still_spreads_jobs_over_its_gpus(tmp_path):
    """No scheduler, two GPUs visible (--resources gpu=2): two jobs at once on cuda:0 and cuda:1."""
    envs = [{FAKE_SLOTS_ENV: "2"}, {FAKE_SLOTS_ENV: "2"}]
    first, second = run_jobs(tmp_path, envs)
    assert {first[0], second[0]} == {"cuda:0", "cuda:1"}
    assert overlap(first, second)


def test_a_job_seeing_two_gpus_avoids_the_one_another_job_was_given(tmp_path, monkeypatch):
    monkeypatch.setenv(FAKE_SLOTS_ENV, "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.delenv("SLURM_STEP_GPUS", raising=False)
    monkeypatch.delenv("SLURM_JOB_GPUS", raising=False)
    with claim_slot(["2"], tmp_path, timeout=1):  # another job holds physical GPU 2
        with claim_device("auto", tmp_path) as dev:
            assert dev == "cuda:1"  # this job's cuda:1 is physical GPU 3


def test_environment_ids():
    assert ids_from_environment(2, {}) == ["0", "1"]
    assert ids_from_environment(2, {"CUDA_VISIBLE_DEVICES": "4,6"}) == ["4", "6"]
    # SLURM's list wins only when it names as many GPUs as the job sees
    assert ids_from_environment(1, {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "3"}) == ["3"]
    assert ids_from_environment(1, {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "3,4"}) == ["0"]
    assert ids_from_environment(1, {"SLURM_STEP_GPUS": "5", "SLURM_JOB_GPUS": "7"}) == ["5"]
    assert lock_name("MIG-GPU-1234/1/0") == "gpu-MIG-GPU-1234_1_0.lock"


class FakeCuda:
    """torch.cuda on a two-GPU box, for the UUID path on the CPU."""

    def __init__(self, uuids):
        self.uuids = uuids

    def is_available(self):
        return True

    def device_count(self):
        return len(self.uuids)

    def get_device_properties(self, i):
        return SimpleNamespace(uuid=self.uuids[i])


def test_real_gpus_are_keyed_by_their_uuid(tmp_path, monkeypatch):
    import torch

    monkeypatch.delenv(FAKE_SLOTS_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # renumbered: only the UUID names the device
    monkeypatch.setattr(torch, "cuda", FakeCuda(["1111-aa", "2222-bb"]))
    assert visible_gpus() == ["GPU-1111-aa", "GPU-2222-bb"]
    with claim_slot(["GPU-1111-aa"], tmp_path, timeout=1):  # another job runs on the first GPU
        with claim_device("auto", tmp_path) as dev:
            assert dev == "cuda:1"
    assert (tmp_path / "gpu-GPU-2222-bb.lock").exists()


def test_without_uuids_real_gpus_fall_back_to_the_environment(monkeypatch):
    import torch

    class NoUuid(FakeCuda):
        def get_device_properties(self, i):
            return SimpleNamespace()

    monkeypatch.delenv(FAKE_SLOTS_ENV, raising=False)
    monkeypatch.delenv("SLURM_STEP_GPUS", raising=False)
    monkeypatch.delenv("SLURM_JOB_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr(torch, "cuda", NoUuid(["x"]))
    assert visible_gpus() == ["3"]
    assert device_mod.gpu_count() == 1
