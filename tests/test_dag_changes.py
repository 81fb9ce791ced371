"""Changes under finished runs, through Snakemake itself (issue 16): new training images retrain (the old
checkpoint is set aside), a longer schedule extends the finished run, and a job whose Snakemake is killed
stops instead of writing on as an orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow
MODEL = "results/tiny/objguided/refine/seed0/model.pt"
OURS_TINY = {"backbone": "resnet18", "pretrained": None, "input_size": 64, "batch_size": 2, "max_steps": 4,
             "num_workers": 0, "head_width": 16, "checkpoint_min_seconds": 0.0, "score_threshold": 0.01}


def write_config(path: Path, data_seed: int = 1, **params) -> Path:
    config = {"seeds": [0], "device": "cpu",
              "datasets": {"tiny": {"source": "synthetic",
                                    "options": {"generator": "nuclei", "n_images": 6, "image_size": 64,
                                                "seed": data_seed}}},
              "methods": {"objguided": {"params": {**OURS_TINY, **params}, "variants": {"refine": {}}}}}
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(snakemake_cmd, repo, workdir, config, *targets, popen=False):
    cmd = snakemake_cmd + ["-s", str(repo / "Snakefile"), "--directory", str(workdir), "--configfile", str(config),
                           "--cores", "1", *targets]
    if popen:
        return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def model_record(workdir: Path) -> dict:
    return torch.load(workdir / MODEL, map_location="cpu", weights_only=False)


def test_new_training_images_retrain_and_a_longer_schedule_extends(snakemake_cmd, repo, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    snakemake(snakemake_cmd, repo, tmp_path, config, MODEL)
    first = model_record(tmp_path)
    assert (first["train_steps"], first["resumed_from_step"]) == (4, 0)

    snakemake(snakemake_cmd, repo, tmp_path, write_config(config, data_seed=2), MODEL)  # other images, same ids
    retrained = model_record(tmp_path)
    log = (tmp_path / MODEL).with_name("train.log").read_text()
    assert "moved to checkpoint.stale.pt" in log and retrained["resumed_from_step"] == 0, log[-2000:]
    weights, new_weights = first["state"]["model"], retrained["state"]["model"]
    assert any(not torch.equal(weights[k], new_weights[k]) for k in weights), "the old weights came back"

    snakemake(snakemake_cmd, repo, tmp_path, write_config(config, data_seed=2, max_steps=6), MODEL)
    extended = model_record(tmp_path)
    log = (tmp_path / MODEL).with_name("train.log").read_text()
    assert (extended["train_steps"], extended["resumed_from_step"]) == (6, 4), log[-2000:]
    assert "stale" not in log
    assert extended["train_seconds"] > extended["train_seconds_this_job"] - 1e-9


def job_pids(workdir: Path, verb: str) -> list[int]:
    """Processes running `objguided <verb>` in ``workdir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"objguided" in cmdline and verb.encode() in cmdline and Path(cwd) == workdir:
            pids.append(int(proc.name))
    return pids


def test_a_job_stops_when_its_snakemake_is_killed(snakemake_cmd, repo, tmp_path):
    workdir = tmp_path.resolve()
    config = write_config(tmp_path / "config.yaml", max_steps=100_000, epochs=100_000)
    smk = snakemake(snakemake_cmd, repo, workdir, config, MODEL, popen=True)
    try:
        deadline = time.monotonic() + 300
        while not job_pids(workdir, "train"):
            assert smk.poll() is None and time.monotonic() < deadline, "the train job never started"
            time.sleep(0.2)
        time.sleep(2)  # let it train a little
        os.kill(smk.pid, signal.SIGKILL)  # only Snakemake: its shell and the job are left behind
        smk.wait(timeout=30)
        deadline = time.monotonic() + 30
        while job_pids(workdir, "train") and time.monotonic() < deadline:
            time.sleep(0.2)
        left = job_pids(workdir, "train")
        assert not left, f"the train job outlived its Snakemake: {left}"
    finally:
        for pid in job_pids(workdir, "train"):
            os.kill(pid, signal.SIGKILL)
    log = (workdir / MODEL).with_name("train.log").read_text()
    assert "is gone; stopping" in log
