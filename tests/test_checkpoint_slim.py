"""A finished run keeps a slim checkpoint (issue 20: checkpoints were 3.9 of the demo's 5.3 GB): once model.pt is
written, the run step drops the optimizer's moments from checkpoint.pt, and a longer schedule still resumes from
it rather than training again from step 0."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import objguided_methods as methods
from objguided.data.canonical import write_sample
from objguided.engine.run import train_run
from objguided.engine.trainer import CHECKPOINT, TrainConfig, fit, load_checkpoint, resume_key
from objguided_methods.base import Method


@dataclasses.dataclass
class WideToyConfig:
    max_steps: int = 3
    epochs: int = 100
    lr: float = 0.01


class WideToy(Method):
    """A 64-1024-64 linear map (half a megabyte of weights) fitted by the shared trainer with Adam (its moments:
    twice the weights)."""

    name = "wide_toy_slim_test"
    Config = WideToyConfig

    def train(self, train_set, val_set, cfg, workdir, device):
        pairs = [(s.image, s.labels) for s in train_set]
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.Linear(1024, 64))
        x = torch.tensor(np.stack([p[0].ravel()[:64] for p in pairs]), dtype=torch.float32) / 255

        tcfg = TrainConfig(epochs=cfg.epochs, max_steps=cfg.max_steps, lr=cfg.lr, progress=False)
        fit(net, lambda epoch: [None], lambda n, b: ((n(x) - x) ** 2).mean(), tcfg, workdir, device,
            run_key=resume_key(self.name, cfg, pairs, train_set.ids, seed=0))
        return {"model": {k: v.detach().clone() for k, v in net.state_dict().items()}}


@pytest.fixture
def wide_toy(monkeypatch):
    monkeypatch.setitem(methods._REGISTRY, WideToy.name, WideToy())
    return WideToy.name


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in ("a", "b"):
        write_sample(root, i, rng.integers(0, 255, (8, 8), dtype=np.uint8), np.ones((8, 8), np.uint16))
    (root / "split.json").write_text('{"train": ["a", "b"], "val": [], "test": []}')
    return root


def train(method, data, out, **params):
    return train_run(method, "default", params, data, data / "split.json", 0, out, device="cpu")


def test_a_finished_run_keeps_a_checkpoint_without_optimizer_moments(wide_toy, data, tmp_path):
    model_path = tmp_path / "run" / "model.pt"
    record = train(wide_toy, data, model_path, max_steps=3)
    ckpt_path = model_path.with_name(CHECKPOINT)
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["finished"] and ckpt["step"] == 3
    assert ckpt["optimizer"]["state"] == {} and ckpt["optimizer"]["param_groups"][0]["lr"] == 0.01
    for key, weights in record["state"]["model"].items():  # the weights stay: the run can go on from them
        assert torch.equal(ckpt["model"][key], weights)
    # the moments were twice the weights: the checkpoint is now about the size of the model file
    assert ckpt_path.stat().st_size < 1.3 * model_path.stat().st_size


def test_a_longer_schedule_resumes_from_the_slim_checkpoint(wide_toy, data, tmp_path):
    model_path = tmp_path / "run" / "model.pt"
    first = train(wide_toy, data, model_path, max_steps=3)
    extended = train(wide_toy, data, model_path, max_steps=6)
    assert (extended["train_steps"], extended["resumed_from_step"]) == (6, 3)
    assert not torch.equal(first["state"]["model"]["0.weight"], extended["state"]["model"]["0.weight"])
    assert load_checkpoint(model_path.with_name(CHECKPOINT))["optimizer"]["state"] == {}
    again = train(wide_toy, data, model_path, max_steps=6)  # nothing left to train: the same weights
    assert again["resumed_from_step"] == 6
    assert torch.equal(again["state"]["model"]["0.weight"], extended["state"]["model"]["0.weight"])
