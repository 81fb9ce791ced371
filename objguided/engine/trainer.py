"""The training loop shared by every learned method: resumable, logged, mixed precision on CUDA.

:func:`fit` runs ``epochs`` passes over the batches a method hands it, with one optimizer over all of
the model's parameters, and keeps ``<workdir>/checkpoint.pt`` up to date so that a killed job resumes
where it stopped:

- **Checkpoint** (atomic: temp file + rename) at the end of every ``checkpoint_every`` epochs (skipped
  while less than ``checkpoint_min_seconds`` have passed since the previous one: for data sets whose
  epochs last a step or two), at the last epoch and when ``max_steps`` is reached: model, optimizer, AMP scaler, epochs done, steps done,
  the random states (torch, every CUDA device, numpy's global state, python ``random``), the
  :class:`TrainConfig` and the caller's ``run_key``.
- **Resume**: when ``fit`` finds a checkpoint whose config and ``run_key`` match, it restores all of
  that and continues with the next epoch; steps run after the checkpoint by the killed job are run
  again, from the same random state, so on the CPU an interrupted-and-resumed run ends with exactly
  the weights of an uninterrupted one. A checkpoint of another config is set aside as
  ``checkpoint.stale.pt`` (with a warning) and training starts afresh. The fields of
  :data:`RESUMABLE_CHANGES` (``epochs``, ``max_steps``, ``log_every``, ``num_workers``, ...) may change
  between the two runs: raising ``epochs`` or ``max_steps`` extends a run, and the extended run ends with
  exactly the weights of a run planned that long from the start (a run stopped by ``max_steps`` inside an
  epoch goes on from the next batch of that epoch). A checkpoint already past the schedule asked for
  (``max_steps`` or ``epochs`` lowered below what it did) is set aside like a stale one. A finished run's
  checkpoint makes ``fit`` return at once with its weights. Methods build ``run_key`` with
  :func:`resume_key`, which holds the content of the training data, so a checkpoint is never resumed on
  other images or labels.
- **Time**: ``<workdir>/train_progress.json`` says how many steps and epochs the weights have seen and how
  many seconds of training they took over every job of the run (:func:`read_progress`), so a job that
  resumes or merely finds a finished run reports the run's training time, not its own.
- **Divergence**: a loss term that is NaN or infinite stops training with :class:`TrainingDiverged`,
  naming the epoch, step and term, before the bad step touches the weights; the last checkpoint (the
  last good state) is left as it was.
- **Logging**: a tqdm bar over all steps; ``<workdir>/losses.csv`` gets a row every ``log_every``
  steps (and at the last one): epoch, step, every loss term, lr, seconds since the start of
  training (cumulated over resumed runs); rows after the checkpoint are dropped on resume, so the log
  matches the weights. TensorBoard scalars go to ``<workdir>/tb/`` when ``tensorboard`` is installed
  (silently skipped otherwise).
- **Learning rate**: constant, or multiplied by ``lr_gamma`` after each step listed in ``lr_milestones``.
- **Mixed precision** (``torch.autocast`` float16 + ``GradScaler``) runs only on CUDA devices; on the
  CPU ``amp`` is ignored and training is plain float32.

The data side stays with the method: ``batches_for_epoch(epoch)`` returns the batches of one epoch
(any iterable, e.g. a DataLoader from :func:`make_loader`). For exact resumption it must be a function
of the epoch number and the random state at the epoch's start only; :func:`make_loader` does this by
drawing the order and a per-sample augmentation seed from ``(seed, epoch)`` (:class:`EpochSampler`),
so the batches do not even depend on the number of workers. ``loss_fn(model, batch)`` returns a dict
of scalar tensors with a ``"total"`` key (the one minimised; the others are logged) or one tensor.
Batches are moved to the device first (tensors inside tuples, lists and dicts).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import hashlib
import itertools
import logging
import math
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from objguided.engine.atomic import atomic_path, write_json
from objguided.errors import ConfigError, ObjguidedError

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
STALE_CHECKPOINT = "checkpoint.stale.pt"
LOSS_LOG = "losses.csv"
PROGRESS = "train_progress.json"
#: tells this process's train_progress.json from one an earlier job left in the same folder
_JOB = uuid.uuid4().hex
CHECKPOINT_FORMAT = "objguided-checkpoint/1"
OPTIMIZERS = ("adam", "adamw", "sgd", "nadam")
#: TrainConfig fields that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = ("epochs", "max_steps", "log_every", "num_workers", "checkpoint_every",
                     "checkpoint_min_seconds", "progress")


class TrainingDiverged(ObjguidedError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 8  # recorded, and used by make_loader; fit itself takes the batches it is given
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9) | nadam
    lr_milestones: list = field(default_factory=list)  # optimizer steps after which lr *= lr_gamma
    lr_gamma: float = 0.1
    amp: bool = True  # float16 autocast + GradScaler; CUDA only, ignored on the CPU
    num_workers: int = 0  # data-loader worker processes (make_loader)
    checkpoint_every: int = 1  # epochs
    checkpoint_min_seconds: float = 0.0  # and at least this long after the previous one (tiny epochs)
    max_steps: int | None = None  # stop after this many optimizer steps in all (short demo runs)
    log_every: int = 10  # steps between rows of losses.csv
    grad_clip: float | None = None  # max global gradient norm; None = no clipping
    progress: bool = True  # tqdm bar

    def check(self) -> None:
        def fail(key: str, msg: str) -> None:
            raise ConfigError(f"train config: {key}: {msg}")

        for key in ("epochs", "batch_size", "checkpoint_every", "log_every"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                fail(key, f"expected an integer >= 1, got {v!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            fail("num_workers", f"expected an integer >= 0, got {self.num_workers!r}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            fail("max_steps", f"expected null or an integer >= 1, got {self.max_steps!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            fail("lr", f"expected a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            fail("weight_decay", f"expected a number >= 0, got {self.weight_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            fail("optimizer", f"expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (isinstance(self.checkpoint_min_seconds, (int, float)) and self.checkpoint_min_seconds >= 0):
            fail("checkpoint_min_seconds", f"expected a number >= 0, got {self.checkpoint_min_seconds!r}")
        if not isinstance(self.lr_milestones, (list, tuple)) or not all(
                isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in self.lr_milestones):
            fail("lr_milestones", f"expected a list of step numbers >= 1, got {self.lr_milestones!r}")
        if not (isinstance(self.lr_gamma, (int, float)) and self.lr_gamma > 0):
            fail("lr_gamma", f"expected a positive number, got {self.lr_gamma!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            fail("grad_clip", f"expected null or a positive number, got {self.grad_clip!r}")


# ---------------------------------------------------------------------------------------------------
# data helpers


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(index, sample_seed)`` for one epoch: a permutation (or the identity) of ``range(n)``,
    and a 63-bit seed per sample for its augmentation, both drawn from ``(seed, epoch)`` only.

    >>> list(EpochSampler(3, seed=0, epoch=0, shuffle=False))[0][0]
    0
    >>> list(EpochSampler(4, 1, 2)) == list(EpochSampler(4, 1, 2))
    True
    """

    def __init__(self, n: int, seed: int, epoch: int, shuffle: bool = True):
        self.n, self.seed, self.epoch, self.shuffle = int(n), int(seed), int(epoch), shuffle

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + 17) % 2**63)
        order = torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))
        seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()
        return iter(zip(order, seeds))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy's and python's global generators from torch's per-worker
    seed (itself drawn from the main process's torch state), so code that uses them is reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset, batch_size: int, seed: int, epoch: int, *, shuffle: bool = True,
                num_workers: int = 0, collate_fn: Callable | None = None,
                drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` whose items are fetched as ``dataset[(index, sample_seed)]``
    (:class:`EpochSampler`): order and augmentation depend on ``(seed, epoch)`` only."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed, epoch, shuffle),
        num_workers=num_workers, collate_fn=collate_fn, drop_last=drop_last, worker_init_fn=seed_worker,
        persistent_workers=False)


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor inside (nested) tuples, lists and dicts to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# ---------------------------------------------------------------------------------------------------
# random states


def rng_states() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        cuda = states["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


# ---------------------------------------------------------------------------------------------------
# the loop


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "nadam":
        return torch.optim.NAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def _as_terms(out: Any) -> dict[str, torch.Tensor]:
    if torch.is_tensor(out):
        return {"total": out}
    if isinstance(out, Mapping) and "total" in out:
        return dict(out)
    raise TypeError("loss_fn must return a scalar tensor or a dict of scalar tensors with a 'total' key, "
                    f"got {type(out).__name__}")


def data_sha256(pairs: Iterable[tuple[np.ndarray, np.ndarray]], ids: Iterable[str]) -> str:
    """The sha256 of what a model is trained on: every (id, image, label map) as decoded pixels, in order.

    Pixels, not file bytes: a re-encoded but identical image keeps its checkpoints; a changed pixel does not.

    >>> a = [(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint16))]
    >>> b = [(np.ones((2, 2), np.uint8), np.zeros((2, 2), np.uint16))]
    >>> data_sha256(a, ["x"]) == data_sha256(a, ["x"]), data_sha256(a, ["x"]) == data_sha256(b, ["x"])
    (True, False)
    """
    digest = hashlib.sha256()
    for image_id, (image, labels) in zip(ids, pairs, strict=True):
        for part in (image, labels):
            part = np.ascontiguousarray(part)
            digest.update(f"{image_id}|{part.dtype.str}|{part.shape}|".encode())
            digest.update(part.tobytes())
    return digest.hexdigest()


def resume_key(method: str, cfg: Any, pairs: list[tuple[np.ndarray, np.ndarray]], ids: Iterable[str],
               seed: int) -> dict:
    """The ``run_key`` of :func:`fit` for a method's training: its config less the fields that only schedule or
    observe training (:data:`RESUMABLE_CHANGES`: a run may be extended), its seed, and the content of its
    training data (:func:`data_sha256`): a checkpoint trained on other images or labels is never resumed."""
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    return {"method": method, "config": config, "seed": seed, "train_data_sha256": data_sha256(pairs, ids)}


def _fingerprint(cfg: TrainConfig, run_key: Any) -> dict:
    fixed = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    return {"train": fixed, "run_key": run_key}


def _why_not_resume(ckpt: dict, fingerprint: dict, cfg: TrainConfig) -> str | None:
    """Why a checkpoint cannot be resumed under ``cfg`` (None: it can)."""
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("fingerprint") != fingerprint:
        return "belongs to another configuration or other training data"
    if cfg.max_steps is not None and int(ckpt["step"]) > cfg.max_steps:
        return f"has trained {ckpt['step']} steps, past max_steps = {cfg.max_steps}"
    if int(ckpt["epoch"]) > cfg.epochs or (int(ckpt["epoch"]) == cfg.epochs and ckpt.get("epoch_batches_done")):
        return f"has trained past epochs = {cfg.epochs}"
    return None


def _write_progress(workdir: Path, step: int, epoch: int, seconds: float, seconds_this_job: float,
                    resumed_from: int, finished: bool) -> None:
    write_json(workdir / PROGRESS, {"steps": step, "epochs": epoch, "seconds": seconds,
                                    "seconds_this_job": seconds_this_job, "resumed_from_step": resumed_from,
                                    "finished": finished, "job": _JOB})


def read_progress(workdir: str | Path) -> dict | None:
    """The ``train_progress.json`` this process wrote in ``workdir`` (None if it wrote none: a method that
    does not train with :func:`fit`, or a file left by another job)."""
    path = Path(workdir) / PROGRESS
    try:
        progress = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return progress if progress.get("job") == _JOB else None


class _LossLog:
    """``losses.csv``: a header from the first loss dict, rows appended; truncated to a step on resume."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] | None = None

    def truncate(self, last_step: int) -> None:
        if not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        header, body = rows[0], rows[1:]
        keep = [r for r in body if r and int(r[1]) <= last_step]
        with atomic_path(self.path) as tmp:
            with tmp.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                w.writerows(keep)
        self.columns = header

    def write(self, epoch: int, step: int, terms: dict[str, float], lr: float, seconds: float) -> None:
        if self.columns is None:
            self.columns = ["epoch", "step", *terms.keys(), "lr", "seconds"]
            if not self.path.is_file() or self.path.stat().st_size == 0:
                with self.path.open("w", newline="") as f:
                    csv.writer(f).writerow(self.columns)
        values = {"epoch": epoch, "step": step, "lr": f"{lr:.6g}", "seconds": f"{seconds:.3f}",
                  **{k: f"{v:.6g}" for k, v in terms.items()}}
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([values.get(c, "") for c in self.columns])


def _tensorboard(workdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: optional
        return None
    try:
        return SummaryWriter(log_dir=str(workdir / "tb"))
    except Exception:
        return None


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def fit(model: torch.nn.Module, batches_for_epoch: Callable[[int], Iterable], loss_fn: Callable[[torch.nn.Module, Any], Any],
        cfg: TrainConfig, workdir: str | Path, device: str | torch.device = "cpu", *,
        run_key: Any = None) -> torch.nn.Module:
    """Train ``model`` in place (resuming from ``<workdir>/checkpoint.pt`` if there is a matching one)
    and return it, in eval mode, on ``device``.

    ``batches_for_epoch(epoch)`` (epoch counts from 0) gives the epoch's batches; ``loss_fn(model,
    batch)`` the loss (see the module docstring). ``run_key`` is any picklable description of what is
    trained (e.g. the method's config): a checkpoint with another key is not resumed.
    """
    cfg.check()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    model.to(device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ckpt_path = workdir / CHECKPOINT
    loss_log = _LossLog(workdir / LOSS_LOG)
    fingerprint = _fingerprint(cfg, run_key)

    epoch, step, seconds_before, resumed_from, batches_done = 0, 0, 0.0, 0, 0
    ckpt = None
    if ckpt_path.is_file():
        try:
            ckpt = load_checkpoint(ckpt_path)
        except Exception as exc:  # a damaged file: atomic writes make this unlikely
            log.warning("%s cannot be read (%s); training from the start", ckpt_path, exc)
            ckpt = None
        why_not = _why_not_resume(ckpt, fingerprint, cfg) if ckpt is not None else None
        if why_not:
            os.replace(ckpt_path, workdir / STALE_CHECKPOINT)
            log.warning("%s %s; moved to %s, training from the start", ckpt_path, why_not, STALE_CHECKPOINT)
            (workdir / LOSS_LOG).unlink(missing_ok=True)
            ckpt = None
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if use_amp and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            set_rng_states(ckpt["rng"])
            epoch, step, seconds_before = int(ckpt["epoch"]), int(ckpt["step"]), float(ckpt.get("seconds", 0.0))
            resumed_from, batches_done = step, int(ckpt.get("epoch_batches_done", 0))
            loss_log.truncate(step)
            log.info("resuming from %s: %d epochs, %d steps done", ckpt_path, epoch, step)
    else:
        (workdir / LOSS_LOG).unlink(missing_ok=True)

    def done() -> bool:
        return epoch >= cfg.epochs or (cfg.max_steps is not None and step >= cfg.max_steps)

    def save(final: bool, in_epoch: int = 0) -> None:
        """``in_epoch``: batches of the current epoch already trained on (a stop by ``max_steps``)."""
        seconds = seconds_before + (time.perf_counter() - started)
        state = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict() if use_amp else None, "epoch": epoch, "step": step,
                 "seconds": seconds, "rng": rng_states(), "config": dataclasses.asdict(cfg),
                 "fingerprint": fingerprint, "finished": final, "epoch_batches_done": in_epoch,
                 "epoch_rng": epoch_rng if in_epoch else None}
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)
        _write_progress(workdir, step, epoch, seconds, time.perf_counter() - started, resumed_from, final)

    milestones = {int(m) for m in cfg.lr_milestones}
    started = last_save = time.perf_counter()
    epoch_rng = None
    if done():
        _write_progress(workdir, step, epoch, seconds_before, 0.0, resumed_from, True)
        model.eval()
        return model
    writer = _tensorboard(workdir)
    total_steps = cfg.max_steps
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", mininterval=5,
               disable=not cfg.progress)
    model.train()
    try:
        while not done():
            if batches_done:  # resuming inside an epoch: its batches come from the state at its start
                set_rng_states(ckpt["epoch_rng"])
            epoch_rng = rng_states()
            batches = batches_for_epoch(epoch)
            n_batches = len(batches) if hasattr(batches, "__len__") else None
            if bar.total is None and n_batches:
                planned = cfg.epochs * n_batches
                bar.total = planned if cfg.max_steps is None else min(planned, cfg.max_steps)
            numbered = enumerate(batches)
            if batches_done:  # drop the batches the weights have seen, then go on from the saved state
                for _ in itertools.islice(numbered, batches_done):
                    pass
                set_rng_states(ckpt["rng"])
                batches_done = 0
            for k, batch in numbered:
                batch = to_device(batch, device)
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    terms = _as_terms(loss_fn(model, batch))
                values = {name: float(t.detach().float()) if torch.is_tensor(t) else float(t)
                          for name, t in terms.items()}
                bad = [name for name, v in values.items() if not math.isfinite(v)]
                if bad:
                    kept = (f"the last good checkpoint ({ckpt_path}, after epoch {epoch}, step {step}) is kept"
                            if ckpt_path.is_file() else "no checkpoint had been written yet")
                    raise TrainingDiverged(
                        f"training diverged at epoch {epoch + 1}, step {step + 1}: loss "
                        + ", ".join(f"'{n}' = {values[n]}" for n in bad)
                        + f"; {kept}. Lower the learning rate (now {cfg.lr}) or check the data.")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms["total"]).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                bar.update(1)
                if step in milestones:  # the lr lives in the optimizer's state: a resumed run keeps it
                    for group in optimizer.param_groups:
                        group["lr"] *= cfg.lr_gamma
                last = step == cfg.max_steps or (n_batches is not None and k == n_batches - 1
                                                 and epoch + 1 == cfg.epochs)
                if step % cfg.log_every == 0 or last:
                    lr = optimizer.param_groups[0]["lr"]
                    elapsed = seconds_before + time.perf_counter() - started
                    loss_log.write(epoch + 1, step, values, lr, elapsed)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{values['total']:.4f}", refresh=False)
                    if writer is not None:
                        for name, v in values.items():
                            writer.add_scalar(f"loss/{name}", v, step)
                        writer.add_scalar("lr", lr, step)
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
            else:
                epoch += 1
                if done() or (epoch % cfg.checkpoint_every == 0
                              and time.perf_counter() - last_save >= cfg.checkpoint_min_seconds):
                    save(final=done())
                    last_save = time.perf_counter()
                continue
            # max_steps reached inside the epoch
            save(final=True, in_epoch=k + 1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    model.eval()
    return model


__all__ = ["TrainConfig", "TrainingDiverged", "fit", "resume_key", "data_sha256", "make_loader", "EpochSampler", "seed_worker", "to_device",
           "load_checkpoint", "read_progress", "rng_states", "set_rng_states", "CHECKPOINT", "LOSS_LOG"]
