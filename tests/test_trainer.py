"""The shared training loop: exact resume after a kill, divergence stop, loss log, CPU without AMP."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from objguided.engine.trainer import (
    CHECKPOINT,
    LOSS_LOG,
    EpochSampler,
    TrainConfig,
    TrainingDiverged,
    fit,
    load_checkpoint,
)
from objguided.errors import ConfigError, ObjguidedError

REPO = Path(__file__).resolve().parents[1]


# A tiny problem that touches every random source a real run does: torch (init, dropout, data order),
# numpy's global state (input noise) and python's random (per-batch scale).
TOY = textwrap.dedent("""
    import random
    import numpy as np
    import torch

    X = torch.linspace(-1, 1, 24).reshape(12, 2)
    Y = (X[:, :1] * 2 - X[:, 1:]).clone()


    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, item):
            i, seed = item
            noise = np.random.default_rng(seed).normal(0, 0.01, 2).astype(np.float32)
            return X[i] + torch.from_numpy(noise), Y[i]


    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Dropout(0.3), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 1))


    def batches(epoch):
        return make_loader(Data(), 4, seed=5, epoch=epoch)


    def loss(net, batch):
        x, y = batch
        x = x + torch.from_numpy(np.random.normal(0, 0.01, x.shape).astype(np.float32))
        err = (net(x) * random.uniform(0.9, 1.1) - y) ** 2
        return {"total": err.mean(), "max": err.max().detach()}
""")
exec("from objguided.engine.trainer import make_loader\n" + TOY)


def seed_all(seed=0):
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(workdir, epochs=4, loss_fn=None, **kw):
    seed_all()
    net = model()  # noqa: F821 (defined by TOY)
    cfg = TrainConfig(epochs=epochs, lr=0.01, progress=False, log_every=kw.pop("log_every", 2), **kw)
    return fit(net, batches, loss_fn or loss, cfg, workdir, "cpu")  # noqa: F821


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Interrupt(Exception):
    pass


def test_simulated_interruption_resumes_exactly(tmp_path):
    reference = run(tmp_path / "ref")
    calls = {"n": 0}

    def dies_in_epoch_3(net, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # 3 batches an epoch: the 2nd batch of epoch 3
            raise Interrupt
        return loss(net, batch)  # noqa: F821

    with pytest.raises(Interrupt):
        run(tmp_path / "cut", loss_fn=dies_in_epoch_3)
    ckpt = load_checkpoint(tmp_path / "cut" / CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step"], ckpt["finished"]) == (2, 6, False)
    resumed = run(tmp_path / "cut")
    assert same_weights(reference, resumed)
    # the loss log of the resumed run matches the uninterrupted one (rows past the checkpoint dropped)
    read = lambda d: [r[:-1] for r in csv.reader((d / LOSS_LOG).open())]  # noqa: E731 (seconds differ)
    assert read(tmp_path / "ref") == read(tmp_path / "cut")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "train_toy.py"
    script.write_text("import os, sys, time\nfrom objguided.engine.trainer import TrainConfig, fit, make_loader\n"
                      + TOY + textwrap.dedent("""
        import random
        random.seed(0); np.random.seed(0)
        workdir = sys.argv[1]
        hang = os.environ.get("HANG_AT_STEP")
        seen = {"n": 0}

        def maybe_hang(net, batch):
            seen["n"] += 1
            if hang and seen["n"] == int(hang):
                open(os.path.join(workdir, "hanging"), "w").close()
                time.sleep(600)
            return loss(net, batch)

        net = fit(model(), batches, maybe_hang, TrainConfig(epochs=4, lr=0.01, progress=False), workdir, "cpu")
        torch.save(net.state_dict(), os.path.join(workdir, "final.pt"))
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    py = [sys.executable, str(script)]
    subprocess.run(py + [str(tmp_path / "ref")], env=env, check=True, timeout=300)
    cut = tmp_path / "cut"
    cut.mkdir()
    proc = subprocess.Popen(py + [str(cut)], env={**env, "HANG_AT_STEP": "8"})
    try:
        deadline = time.monotonic() + 240
        while not (cut / "hanging").exists():
            assert proc.poll() is None, "the training to be killed exited early"
            assert time.monotonic() < deadline, "the training to be killed never reached its hang"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(cut / CHECKPOINT)["epoch"] == 2
    assert not (cut / "final.pt").exists()
    subprocess.run(py + [str(cut)], env=env, check=True, timeout=300)
    ref = torch.load(tmp_path / "ref" / "final.pt")
    res = torch.load(cut / "final.pt")
    assert all(torch.equal(ref[k], res[k]) for k in ref)


def test_nan_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    after_two = run(tmp_path / "two", epochs=2)
    calls = {"n": 0}

    def nan_in_epoch_3(net, batch):
        calls["n"] += 1
        out = loss(net, batch)  # noqa: F821
        if calls["n"] == 8:
            out["total"] = out["total"] * float("nan")
        return out

    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 8: loss 'total' = nan.*last good checkpoint") as err:
        run(tmp_path / "nan", loss_fn=nan_in_epoch_3)
    assert isinstance(err.value, ObjguidedError)
    ckpt = load_checkpoint(tmp_path / "nan" / CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step"]) == (2, 6)
    assert all(torch.equal(v, after_two.state_dict()[k]) for k, v in ckpt["model"].items())


def test_loss_csv(tmp_path):
    run(tmp_path, epochs=3, log_every=2, max_steps=7)
    rows = list(csv.DictReader((tmp_path / LOSS_LOG).open()))
    assert list(rows[0]) == ["epoch", "step", "total", "max", "lr", "seconds"]
    # every 2nd step and the last one: steps 2, 4, 6, 7 of 3-step epochs
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(1, 2), (2, 4), (2, 6), (3, 7)]
    assert all(float(r["lr"]) == 0.01 and float(r["total"]) >= 0 and float(r["seconds"]) >= 0 for r in rows)


def test_amp_is_skipped_on_cpu(tmp_path):
    a = run(tmp_path / "amp", epochs=2, amp=True)
    b = run(tmp_path / "fp32", epochs=2, amp=False)
    assert same_weights(a, b)
    assert load_checkpoint(tmp_path / "amp" / CHECKPOINT)["scaler"] is None
    assert all(p.dtype == torch.float32 for p in a.parameters())


def test_max_steps_and_finished_run(tmp_path):
    run(tmp_path, epochs=100, max_steps=5)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert (ckpt["step"], ckpt["finished"]) == (5, True)
    mtime = (tmp_path / CHECKPOINT).stat().st_mtime_ns
    run(tmp_path, epochs=100, max_steps=5)  # nothing left to do
    assert (tmp_path / CHECKPOINT).stat().st_mtime_ns == mtime


def test_checkpoint_of_another_config_is_set_aside(tmp_path):
    run(tmp_path, epochs=1)
    seed_all()
    fit(model(), batches, loss, TrainConfig(epochs=1, lr=0.02, progress=False), tmp_path, "cpu")  # noqa: F821
    assert (tmp_path / "checkpoint.stale.pt").is_file()
    assert load_checkpoint(tmp_path / CHECKPOINT)["config"]["lr"] == 0.02


def test_checkpoint_min_seconds_skips_checkpoints_of_short_epochs(tmp_path):
    saves = []
    import objguided.engine.trainer as trainer

    real = trainer.atomic_path

    def counting(path):
        saves.append(path)
        return real(path)

    trainer.atomic_path = counting
    try:
        run(tmp_path, epochs=4, checkpoint_min_seconds=3600)
    finally:
        trainer.atomic_path = real
    assert [p.name for p in saves if p.name == CHECKPOINT] == [CHECKPOINT]  # only the final one
    assert load_checkpoint(tmp_path / CHECKPOINT)["epoch"] == 4


def test_lr_milestones_and_nadam_survive_resume(tmp_path):
    reference = run(tmp_path / "ref", optimizer="nadam", lr_milestones=[4, 8], lr_gamma=0.5)
    rows = list(csv.DictReader((tmp_path / "ref" / LOSS_LOG).open()))
    assert [float(r["lr"]) for r in rows] == [0.01, 0.005, 0.005, 0.0025, 0.0025, 0.0025]  # steps 2..12
    calls = {"n": 0}

    def dies(net, batch):
        calls["n"] += 1
        if calls["n"] == 11:
            raise Interrupt
        return loss(net, batch)  # noqa: F821

    with pytest.raises(Interrupt):
        run(tmp_path / "cut", loss_fn=dies, optimizer="nadam", lr_milestones=[4, 8], lr_gamma=0.5)
    resumed = run(tmp_path / "cut", optimizer="nadam", lr_milestones=[4, 8], lr_gamma=0.5)
    assert same_weights(reference, resumed)


def test_config_errors():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="rmsprop").check()
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig(max_steps=0).check()
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=-1.0).check()
    with pytest.raises(ConfigError, match="lr_milestones"):
        TrainConfig(lr_milestones=[0]).check()


def test_epoch_sampler_depends_on_seed_and_epoch_only():
    a = list(EpochSampler(10, seed=3, epoch=1))
    assert a == list(EpochSampler(10, seed=3, epoch=1))
    assert a != list(EpochSampler(10, seed=3, epoch=2))
    assert sorted(i for i, _ in a) == list(range(10))
