"""A training budget in compute, not steps (issue #23): ``budget_seconds`` of process CPU time, honoured by the
shared trainer for every learned method, resumable like ``max_steps``, and replayable exactly with the steps
it reached."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from test_trainer import Data, loss, model, same_weights, seed_all  # the toy problem: 3 batches an epoch
from test_trainer_schedule import loss_rows, toy_run

import objguided_methods as methods
from objguided.data.canonical import write_sample
from objguided.engine.run import train_run
from objguided.engine.trainer import (
    CHECKPOINT,
    PROGRESS,
    STALE_CHECKPOINT,
    TrainConfig,
    fit,
    load_checkpoint,
    make_loader,
    resume_key,
)
from objguided.errors import ConfigError

BUDGET = 0.15  # CPU seconds: a few dozen of the toy's steps


def progress(workdir):
    return json.loads((workdir / PROGRESS).read_text())


def test_a_budget_run_stops_at_its_budget_and_records_the_steps_and_compute(tmp_path):
    toy_run(tmp_path, budget_seconds=BUDGET, epochs=1000)
    done = progress(tmp_path)
    assert done["finished"] and done["compute_clock"] == "process_cpu" and done["budget_seconds"] == BUDGET
    assert done["compute_seconds"] >= BUDGET and 3 < done["steps"] < 3000, "the budget did not end the run"
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert (ckpt["step"], ckpt["compute_seconds"]) == (done["steps"], done["compute_seconds"])


def test_the_recorded_steps_replayed_with_max_steps_give_identical_weights(tmp_path):
    budgeted = toy_run(tmp_path / "budget", budget_seconds=BUDGET)
    steps = progress(tmp_path / "budget")["steps"]
    replayed = toy_run(tmp_path / "replay", max_steps=steps)
    assert same_weights(budgeted, replayed)
    assert loss_rows(tmp_path / "budget") == loss_rows(tmp_path / "replay")


def test_a_larger_budget_continues_the_run_and_carries_the_compute_used(tmp_path):
    toy_run(tmp_path / "run", budget_seconds=BUDGET)
    first = progress(tmp_path / "run")
    calls = []
    extended = toy_run(tmp_path / "run", calls, budget_seconds=3 * BUDGET)
    more = progress(tmp_path / "run")
    assert not (tmp_path / "run" / STALE_CHECKPOINT).exists()
    assert more["resumed_from_step"] == first["steps"] and more["steps"] == first["steps"] + len(calls)
    assert more["compute_seconds"] >= 3 * BUDGET and len(calls) < more["steps"], "the first rung's steps were redone"
    assert same_weights(extended, toy_run(tmp_path / "ref", max_steps=more["steps"]))


def test_the_same_budget_again_returns_the_finished_run(tmp_path):
    toy_run(tmp_path, budget_seconds=BUDGET)
    calls = []
    toy_run(tmp_path, calls, budget_seconds=BUDGET)
    assert calls == [] and not (tmp_path / STALE_CHECKPOINT).exists()


def test_a_checkpoint_past_a_lowered_budget_retrains(tmp_path):
    toy_run(tmp_path, budget_seconds=4 * BUDGET)
    calls = []
    toy_run(tmp_path, calls, budget_seconds=BUDGET)
    assert calls and (tmp_path / STALE_CHECKPOINT).is_file()
    assert progress(tmp_path)["resumed_from_step"] == 0


def test_the_budget_counts_cpu_time_not_wall_time(tmp_path):
    """Steps that wait (a busy machine, I/O) do not use the budget up: each step sleeps 20 ms, and a budget of
    0.1 CPU s lasts far more than the 5 steps a wall-clock budget of 0.1 s would allow."""
    def sleepy(net, batch):
        time.sleep(0.02)
        return loss(net, batch)

    seed_all()
    cfg = TrainConfig(epochs=1000, lr=0.01, progress=False, budget_seconds=0.1)
    fit(model(), lambda e: make_loader(Data(), 4, seed=5, epoch=e), sleepy, cfg, tmp_path, "cpu")
    done = progress(tmp_path)
    assert done["compute_seconds"] >= 0.1
    assert done["steps"] > 10, f"the run stopped after {done['steps']} steps: on wall time"


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "10", True])
def test_a_bad_budget_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match="budget_seconds"):
        TrainConfig(budget_seconds=bad).check()


# ---------------------------------------------------------------------------------------------------
# every learned method passes its config's budget to the shared trainer


#: the module of the methods package holding each learned method's ``train_config``
TRAIN_CONFIGS = {"objguided": "objguided", "keypoint_graph": "keypoint_graph", "dcan": "_dense",
                 "cosine_embedding": "_dense", "mask_rcnn": "_torchvision_detection",
                 "pointrend": "_torchvision_detection"}


@pytest.mark.parametrize("name", sorted(TRAIN_CONFIGS))
def test_every_learned_method_hands_its_budget_to_the_trainer(name):
    import importlib

    method = methods.get(name)
    cfg = method.make_config({"budget_seconds": 90})
    assert importlib.import_module(f"{methods.__name__}.{TRAIN_CONFIGS[name]}").train_config(cfg).budget_seconds == 90
    pairs = [(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint16))]
    other = dataclasses.replace(cfg, budget_seconds=900.0)
    assert resume_key(name, cfg, pairs, ["a"], 0) == resume_key(name, other, pairs, ["a"], 0), \
        "a larger budget would not resume the run"
    with pytest.raises(ConfigError, match="budget_seconds"):
        method.make_config({"budget_seconds": -5})


def test_a_method_trained_to_a_budget_records_it_in_its_model_file(tmp_path):
    """DCAN through the harness: the model file names the compute used and the steps reached; a larger
    budget resumes the same run."""
    rng = np.random.default_rng(0)
    for i in range(4):
        labels = np.zeros((48, 48), np.uint16)
        labels[8:20, 8:20], labels[26:40, 24:38] = 1, 2
        write_sample(tmp_path / "data", f"im{i}", (labels > 0).astype(np.uint8) * 200 + rng.integers(0, 30, (48, 48),
                     dtype=np.uint8), labels)
    (tmp_path / "data" / "split.json").write_text('{"train": ["im0", "im1", "im2"], "val": ["im3"], "test": []}')
    params = {"width": 4, "input_size": 32, "batch_size": 2, "max_steps": None, "progress": False,
              "num_workers": 0, "object_thresholds": [0.5], "contour_thresholds": [0.5], "budget_seconds": 0.5}

    def train(budget):
        return train_run("dcan", "default", {**params, "budget_seconds": budget}, tmp_path / "data",
                         tmp_path / "data" / "split.json", 0, tmp_path / "run" / "model.pt", device="cpu")

    first = train(0.5)
    assert first["train_compute_clock"] == "process_cpu" and first["train_budget_seconds"] == 0.5
    assert first["train_compute_seconds"] >= 0.5 and first["train_steps"] >= 1
    more = train(1.5)
    assert more["resumed_from_step"] == first["train_steps"] and more["train_steps"] > first["train_steps"]
    assert more["train_compute_seconds"] >= 1.5
