"""Fault tolerance of a real training job (issue #8): ``objguided train`` SIGKILLed at a random step and
restarted resumes from its checkpoint (the steps before it are not trained again) and gives the same model,
the same predictions and the same metrics as an uninterrupted run.

The trainer's own tests (tests/test_trainer.py) cover the loop on a toy model, NaN stops and simulated
interruptions; this one goes through the CLI and the paper's network, as the DAG runs it.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from objguided.data.canonical import write_sample
from objguided.data.synthetic import generate
from objguided.engine.trainer import CHECKPOINT, LOSS_LOG
from objguided.metrics.score import score_predictions

REPO = Path(__file__).resolve().parents[1]
STEPS = 12  # 6 epochs of 2 steps (4 images, batch 2), a checkpoint after each epoch
PARAMS = {"backbone": "resnet18", "pretrained": None, "input_size": 64, "batch_size": 2, "epochs": 6, "lr": 2e-3,
          "num_workers": 0, "checkpoint_min_seconds": 0.0, "log_every": 1,
          "score_threshold": 0.01}


def _dataset(root: Path) -> Path:
    ids = []
    for image_id, image, labels in generate("nuclei", 4, 64, 3):
        write_sample(root, image_id, image, labels)
        ids.append(image_id)
    (root / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "test"}))
    return root


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "objguided", *args]


def _train_cmd(data: Path, out: Path) -> list[str]:
    return _cli("train", "--method", "objguided", "--variant", "ft", "--params", json.dumps(PARAMS),
                "--data", str(data), "--split", str(data / "split.json"), "--seed", "5", "--device", "cpu",
                "--out", str(out))


def _steps_logged(run_dir: Path) -> int:
    try:
        with (run_dir / LOSS_LOG).open() as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)
    except FileNotFoundError:
        return 0


def _predict_and_score(data: Path, model: Path) -> tuple[list, dict]:
    pred = model.with_name("predictions.json")
    subprocess.run(_cli("predict", "--model", str(model), "--data", str(data), "--split", str(data / "split.json"),
                        "--subset", "train", "--device", "cpu", "--out", str(pred)), check=True, timeout=300)
    metrics = score_predictions(data, pred, split_path=data / "split.json", subset="train", extras=False)
    return json.loads(pred.read_text()), metrics


@pytest.mark.slow
def test_training_killed_at_a_random_step_resumes_to_the_same_metrics(tmp_path):
    data = _dataset(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref" / "model.pt"
    subprocess.run(_train_cmd(data, ref), env=env, check=True, timeout=600, capture_output=True)

    # kill after a random number of logged steps (past the first checkpoint), a random few ms into the next
    rng = random.Random()
    kill_after, delay = rng.randint(3, STEPS - 2), rng.uniform(0, 0.05)
    why = f"(killed after step {kill_after} + {delay * 1000:.0f} ms)"
    cut = tmp_path / "cut" / "model.pt"
    cut.parent.mkdir()
    proc = subprocess.Popen(_train_cmd(data, cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _steps_logged(cut.parent) < kill_after:
            assert proc.poll() is None, f"the run to be killed ended early {why}"
            assert time.monotonic() < deadline, f"the run to be killed never reached its step {why}"
            time.sleep(0.005)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, why
    assert not cut.exists() and (cut.parent / CHECKPOINT).exists(), why
    saved_step = torch.load(cut.parent / CHECKPOINT, map_location="cpu", weights_only=False)["step"]
    assert saved_step >= 2, f"no checkpoint past the first epoch to resume from {why}"

    subprocess.run(_train_cmd(data, cut), env=env, check=True, timeout=600, capture_output=True)
    resumed = torch.load(cut, map_location="cpu", weights_only=False)
    # the restart went on from the checkpoint: the steps done before the kill were not trained again
    assert (resumed["resumed_from_step"], resumed["train_steps"]) == (saved_step, STEPS), why
    a = torch.load(ref, map_location="cpu", weights_only=False)["state"]["model"]
    b = resumed["state"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ {why}"
    pred_ref, metrics_ref = _predict_and_score(data, ref)
    pred_cut, metrics_cut = _predict_and_score(data, cut)
    assert pred_ref, "the reference run predicts nothing: the comparison would be empty"
    assert pred_cut == pred_ref, why
    for key in ("ap_seg", "ap_dec", "ap_seg_mean", "ap_dec_mean", "counts"):
        assert metrics_cut[key] == metrics_ref[key], f"{key} differs {why}"
