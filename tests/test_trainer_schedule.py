"""What a checkpoint may be resumed under (issue 16): a longer schedule extends a run to exactly the weights of
a run planned that long; anything that changes what was learned (a hyper-parameter, the training pixels, a
shorter schedule than was already trained) retrains; and the recorded training time is the run's, not the
last job's."""

from __future__ import annotations

import csv
import dataclasses
import time

import numpy as np
import pytest
import torch
from test_trainer import Data, loss, model, same_weights, seed_all  # the toy problem: 3 batches an epoch

import objguided_methods as methods
from objguided.data.canonical import write_sample
from objguided.engine.run import train_run
from objguided.engine.trainer import (
    CHECKPOINT,
    LOSS_LOG,
    STALE_CHECKPOINT,
    TrainConfig,
    fit,
    load_checkpoint,
    make_loader,
    resume_key,
)
from objguided_methods.base import Method


def counted(calls):
    def loss_fn(net, batch):
        calls.append(1)
        return loss(net, batch)

    return loss_fn


def toy_run(workdir, calls=None, run_key=None, **kw):
    seed_all()
    cfg = TrainConfig(lr=0.01, progress=False, **{"epochs": 100, "log_every": 1, **kw})
    return fit(model(), lambda epoch: make_loader(Data(), 4, seed=5, epoch=epoch),
               counted(calls if calls is not None else []), cfg, workdir, "cpu", run_key=run_key)



def loss_rows(workdir):
    return [r[:-1] for r in csv.reader((workdir / LOSS_LOG).open())]  # the last column (seconds) differs


def test_raising_max_steps_inside_an_epoch_extends_to_the_weights_of_the_longer_run(tmp_path):
    reference = toy_run(tmp_path / "ref", max_steps=8)
    toy_run(tmp_path / "run", max_steps=4)  # stops after the 1st batch of the 2nd epoch
    calls = []
    extended = toy_run(tmp_path / "run", calls, max_steps=8)
    assert len(calls) == 4, "the 4 steps already done were trained again"
    assert not (tmp_path / "run" / STALE_CHECKPOINT).exists()
    assert same_weights(reference, extended)
    assert loss_rows(tmp_path / "run") == loss_rows(tmp_path / "ref")


def test_raising_epochs_extends_a_finished_run(tmp_path):
    reference = toy_run(tmp_path / "ref", epochs=4)
    toy_run(tmp_path / "run", epochs=2)
    calls = []
    extended = toy_run(tmp_path / "run", calls, epochs=4)
    assert len(calls) == 6 and same_weights(reference, extended)


@pytest.mark.parametrize("change", [{"log_every": 3}, {"num_workers": 1}, {"checkpoint_every": 2}])
def test_logging_and_workers_do_not_throw_the_run_away(tmp_path, change):
    toy_run(tmp_path, max_steps=6)
    calls = []
    toy_run(tmp_path, calls, max_steps=6, **change)
    assert calls == [] and not (tmp_path / STALE_CHECKPOINT).exists()


@pytest.mark.parametrize("change", [{"lr": 0.02}, {"weight_decay": 0.1}, {"optimizer": "sgd"}])
def test_a_changed_hyper_parameter_retrains(tmp_path, change):
    toy_run(tmp_path, max_steps=6)
    seed_all()
    cfg = TrainConfig(**{"lr": 0.01, "epochs": 100, "max_steps": 6, "progress": False, **change})
    calls = []
    fit(model(), lambda e: make_loader(Data(), 4, seed=5, epoch=e), counted(calls), cfg, tmp_path, "cpu")
    assert len(calls) == 6 and (tmp_path / STALE_CHECKPOINT).is_file()


def test_a_checkpoint_past_a_shortened_schedule_retrains(tmp_path):
    reference = toy_run(tmp_path / "ref", max_steps=4)
    toy_run(tmp_path / "run", max_steps=8)
    calls = []
    shortened = toy_run(tmp_path / "run", calls, max_steps=4)
    assert len(calls) == 4 and (tmp_path / "run" / STALE_CHECKPOINT).is_file()
    assert same_weights(reference, shortened)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == 4


def test_other_training_pixels_retrain(tmp_path):
    pairs = [(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint16))]
    changed = [(pairs[0][0].copy(), pairs[0][1].copy())]
    changed[0][1][1, 1] = 1  # one label pixel
    cfg = TrainConfig(max_steps=3)
    key = resume_key("toy", cfg, pairs, ["a"], seed=0)
    assert key == resume_key("toy", dataclasses.replace(cfg, max_steps=9, log_every=1), pairs, ["a"], seed=0)
    assert key != resume_key("toy", cfg, changed, ["a"], seed=0)
    assert key != resume_key("toy", dataclasses.replace(cfg, lr=0.5), pairs, ["a"], seed=0)

    toy_run(tmp_path, max_steps=3, run_key=key)
    calls = []
    toy_run(tmp_path, calls, max_steps=3, run_key=resume_key("toy", cfg, changed, ["a"], seed=0))
    assert len(calls) == 3 and (tmp_path / STALE_CHECKPOINT).is_file()


# ---------------------------------------------------------------------------------------------------
# through the harness: a method on the shared trainer, its data read from a canonical folder


@dataclasses.dataclass
class SlowToyConfig:
    max_steps: int = 4
    epochs: int = 100
    log_every: int = 1
    lr: float = 0.01
    step_seconds: float = 0.15  # makes the training loop, not the job around it, the bulk of the time


class SlowToy(Method):
    name = "slow_toy_test"
    Config = SlowToyConfig

    def train(self, train_set, val_set, cfg, workdir, device):
        pairs = [(s.image, s.labels) for s in train_set]
        x = torch.tensor(np.stack([p[0].mean() for p in pairs]), dtype=torch.float32)[:, None]
        y = torch.tensor(np.stack([float(p[1].max()) for p in pairs]), dtype=torch.float32)[:, None]
        net = torch.nn.Linear(1, 1)

        def loss_fn(net, batch):
            time.sleep(cfg.step_seconds)
            return ((net(x / 255) - y) ** 2).mean()

        tcfg = TrainConfig(epochs=cfg.epochs, max_steps=cfg.max_steps, lr=cfg.lr, log_every=cfg.log_every,
                           progress=False)
        fit(net, lambda epoch: [None], loss_fn, tcfg, workdir, device,
            run_key=resume_key(self.name, cfg, pairs, train_set.ids, seed=0))
        return {"model": net.state_dict()}


@pytest.fixture
def slow_toy(monkeypatch):
    monkeypatch.setitem(methods._REGISTRY, SlowToy.name, SlowToy())
    return SlowToy.name


def toy_dataset(root, value):
    ids = ["a", "b"]
    for i in ids:
        write_sample(root, i, np.full((8, 8), value, np.uint8), np.ones((8, 8), np.uint16))
    (root / "split.json").write_text('{"train": ["a", "b"], "val": [], "test": []}')
    return root


def train(method, data, out, **params):
    return train_run(method, "default", params, data, data / "split.json", 0, out, device="cpu")


def test_a_rerun_over_a_finished_run_records_the_runs_training_time(tmp_path, slow_toy):
    data = toy_dataset(tmp_path / "data", 10)
    first = train(slow_toy, data, tmp_path / "run" / "model.pt")
    assert first["train_seconds"] >= 4 * 0.15 and first["train_steps"] == 4
    again = train(slow_toy, data, tmp_path / "run" / "model.pt")
    assert again["train_seconds_this_job"] < 0.3, "the finished run trained again"
    assert again["train_seconds"] == pytest.approx(first["train_seconds"], abs=0.3)
    assert (again["train_steps"], again["resumed_from_step"]) == (4, 4)


def test_an_extended_run_records_the_time_of_all_its_jobs(tmp_path, slow_toy):
    data = toy_dataset(tmp_path / "data", 10)
    first = train(slow_toy, data, tmp_path / "run" / "model.pt", max_steps=2)
    extended = train(slow_toy, data, tmp_path / "run" / "model.pt", max_steps=5)
    assert (extended["train_steps"], extended["resumed_from_step"]) == (5, 2)
    assert extended["train_seconds"] >= first["train_seconds"] + 3 * 0.15


def test_changed_images_under_a_finished_run_retrain(tmp_path, slow_toy):
    data = toy_dataset(tmp_path / "data", 10)
    first = train(slow_toy, data, tmp_path / "run" / "model.pt")
    toy_dataset(data, 200)  # same ids, other pixels: what a changed synthetic seed or user folder does
    again = train(slow_toy, data, tmp_path / "run" / "model.pt")
    assert again["resumed_from_step"] == 0 and (tmp_path / "run" / STALE_CHECKPOINT).is_file()
    assert not torch.equal(first["state"]["model"]["weight"], again["state"]["model"]["weight"])
