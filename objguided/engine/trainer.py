"""The training loop shared by every learned method: resumable, logged, mixed precision on CUDA.

:func:`fit` runs ``epochs`` passes over the batches a method hands it, with one optimizer over all of
the model's parameters, and keeps ``<workdir>/checkpoint.pt`` up to date so that a killed job resumes
where it stopped:

- **Checkpoint** (atomic: temp file + rename) at the end of every ``checkpoint_every`` epochs (skipped
  while less than ``checkpoint_min_seconds`` have passed since the previous one: for data sets whose
  epochs last a step or two), at the last epoch and when ``max_steps`` or ``budget_seconds`` is reached: model, optimizer, AMP scaler, epochs done, steps done,
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
- **Compute budget**: ``budget_seconds`` stops training at the first step at which the steps have used that
  much compute (:class:`_ComputeClock`): on the CPU the process's CPU time (every thread: with T busy
  threads a budget of B lasts about B / T wall seconds on an idle machine; a machine busy with other work
  does not shorten it), on CUDA the GPU time of the steps between CUDA events. The compute used is kept in
  the checkpoint and ``train_progress.json`` (``compute_seconds``, ``compute_clock``, ``budget_seconds``) and
  carried over resumes: raising the budget continues the run; a checkpoint that has used more than a lowered
  budget is set aside. A budget run's recorded ``steps`` replayed with ``max_steps`` (no budget) give exactly
  its weights: time decides where it stops, not what it computes.
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
import hashlib
import itertools
import json
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
RESUMABLE_CHANGES = ("epochs", "max_steps", "budget_seconds", "log_every", "num_workers", "checkpoint_every",
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
    budget_seconds: float | None = None  # stop once the steps have used this much compute (_ComputeClock)

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
        if self.budget_seconds is not None and not (
                isinstance(self.budget_seconds, (int, float)) and not isinstance(self.budget_seconds, bool)
                and self.budget_seconds > 0 and math.isfinite(self.budget_seconds)):
            fail("budget_seconds", f"expected null or a positive number of seconds, got {self.budget_seconds!r}")


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
    used, budget = float(ckpt.get("compute_seconds", 0.0)), cfg.budget_seconds
    # a run stopped by this very budget has used a little more than it: that is its end, not a shorter schedule
    if budget is not None and used > budget and ckpt["config"].get("budget_seconds") != budget:
        return f"has used {used:.1f} s of compute, past budget_seconds = {budget}"
    return None


def _write_progress(workdir: Path, fields: dict) -> None:
    write_json(workdir / PROGRESS, {**fields, "job": _JOB})


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


class _ComputeClock:
    """The compute a run's steps have used, for ``budget_seconds``, summed over every job of the run.

    On the CPU: this process's CPU time (:func:`time.process_time`, every thread of the process: 2 busy
    threads spend 2 s of budget per wall second) from fetching a batch to the end of its optimizer step, so
    a machine busy with other work does not shorten a method's training; data-loader worker processes
    (``num_workers`` > 0) are not counted. On CUDA: the GPU time of each step between two CUDA events (the
    batch's copy to the device, forward, backward, optimizer step), not the host's batch loading.
    """

    def __init__(self, device: torch.device, used: float = 0.0):
        self.kind = "cuda_events" if device.type == "cuda" else "process_cpu"
        self.used = used
        self._start: Any = None

    def start(self) -> None:
        if self.kind == "process_cpu":
            self._start = time.process_time()

    def start_device(self) -> None:
        if self.kind == "cuda_events":
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()

    def stop(self) -> None:
        if self.kind == "process_cpu":
            self.used += time.process_time() - self._start
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        self.used += self._start.elapsed_time(end) / 1000.0


@dataclass
class _Run:
    """What :func:`fit` carries between its steps: what is trained, and how far training has got."""

    cfg: TrainConfig
    workdir: Path
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    use_amp: bool
    fingerprint: dict
    loss_log: _LossLog
    clock: _ComputeClock
    loss_fn: Callable[[torch.nn.Module, Any], Any]
    epoch: int = 0
    step: int = 0
    seconds_before: float = 0.0
    resumed_from: int = 0
    batches_done: int = 0  # batches of `epoch` the restored weights have seen (a stop inside an epoch)
    ckpt: dict | None = None
    epoch_rng: dict | None = None
    started: float = field(default_factory=time.perf_counter)
    last_save: float = field(default_factory=time.perf_counter)

    @property
    def ckpt_path(self) -> Path:
        return self.workdir / CHECKPOINT

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def over_budget(self) -> bool:
        return self.cfg.budget_seconds is not None and self.clock.used >= self.cfg.budget_seconds

    def stop_in_epoch(self) -> bool:
        """A schedule ends here whatever the epoch: ``max_steps`` or the compute budget reached."""
        return (self.cfg.max_steps is not None and self.step >= self.cfg.max_steps) or self.over_budget()

    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs or self.stop_in_epoch()


def _start_run(model: torch.nn.Module, loss_fn: Callable, cfg: TrainConfig, workdir: Path,
               device: torch.device, run_key: Any) -> _Run:
    use_amp = bool(cfg.amp) and device.type == "cuda"
    model.to(device)
    return _Run(cfg=cfg, workdir=workdir, device=device, model=model,
                optimizer=make_optimizer([p for p in model.parameters() if p.requires_grad], cfg),
                scaler=torch.amp.GradScaler("cuda", enabled=use_amp), use_amp=use_amp,
                fingerprint=_fingerprint(cfg, run_key), loss_log=_LossLog(workdir / LOSS_LOG),
                clock=_ComputeClock(device), loss_fn=loss_fn)


def _read_checkpoint(run: _Run) -> dict | None:
    """The checkpoint to resume from, or None (none there, damaged, or not resumable: set aside)."""
    if not run.ckpt_path.is_file():
        (run.workdir / LOSS_LOG).unlink(missing_ok=True)
        return None
    try:
        ckpt = load_checkpoint(run.ckpt_path)
    except Exception as exc:  # a damaged file: atomic writes make this unlikely
        log.warning("%s cannot be read (%s); training from the start", run.ckpt_path, exc)
        return None
    why_not = _why_not_resume(ckpt, run.fingerprint, run.cfg)
    if why_not:
        os.replace(run.ckpt_path, run.workdir / STALE_CHECKPOINT)
        log.warning("%s %s; moved to %s, training from the start", run.ckpt_path, why_not, STALE_CHECKPOINT)
        (run.workdir / LOSS_LOG).unlink(missing_ok=True)
        return None
    return ckpt


def _restore(run: _Run) -> None:
    """Load a resumable checkpoint's weights, optimizer, scaler, random states and counters into ``run``."""
    ckpt = run.ckpt = _read_checkpoint(run)
    if ckpt is None:
        return
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.use_amp and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    set_rng_states(ckpt["rng"])
    run.epoch, run.step = int(ckpt["epoch"]), int(ckpt["step"])
    run.seconds_before = float(ckpt.get("seconds", 0.0))
    run.clock.used = float(ckpt.get("compute_seconds", 0.0))
    run.resumed_from, run.batches_done = run.step, int(ckpt.get("epoch_batches_done", 0))
    run.loss_log.truncate(run.step)
    log.info("resuming from %s: %d epochs, %d steps done", run.ckpt_path, run.epoch, run.step)


def _progress(run: _Run, seconds: float, seconds_this_job: float, finished: bool) -> None:
    _write_progress(run.workdir, {"steps": run.step, "epochs": run.epoch, "seconds": seconds,
                                  "seconds_this_job": seconds_this_job, "resumed_from_step": run.resumed_from,
                                  "compute_seconds": run.clock.used, "compute_clock": run.clock.kind,
                                  "budget_seconds": run.cfg.budget_seconds, "finished": finished})


def _save(run: _Run, final: bool, in_epoch: int = 0) -> None:
    """Checkpoint ``run``. ``in_epoch``: batches of the current epoch already trained on (a stop by
    ``max_steps`` or the budget)."""
    seconds = run.seconds()
    state = {"format": CHECKPOINT_FORMAT, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scaler": run.scaler.state_dict() if run.use_amp else None, "epoch": run.epoch, "step": run.step,
             "seconds": seconds, "compute_seconds": run.clock.used, "rng": rng_states(),
             "config": dataclasses.asdict(run.cfg), "fingerprint": run.fingerprint, "finished": final,
             "epoch_batches_done": in_epoch, "epoch_rng": run.epoch_rng if in_epoch else None}
    with atomic_path(run.ckpt_path) as tmp:
        torch.save(state, tmp)
    _progress(run, seconds, time.perf_counter() - run.started, final)
    run.last_save = time.perf_counter()


def _train_step(run: _Run, batch: Any) -> dict[str, float]:
    """One optimizer step on ``batch`` (stopping with :class:`TrainingDiverged` before a non-finite loss
    touches the weights); returns the loss terms as numbers."""
    cfg, optimizer, scaler = run.cfg, run.optimizer, run.scaler
    run.clock.start_device()
    batch = to_device(batch, run.device)
    with torch.autocast(device_type=run.device.type, dtype=torch.float16, enabled=run.use_amp):
        terms = _as_terms(run.loss_fn(run.model, batch))
    values = {name: float(t.detach().float()) if torch.is_tensor(t) else float(t) for name, t in terms.items()}
    _stop_if_diverged(run, values)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["total"]).backward()
    if cfg.grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    run.clock.stop()
    run.step += 1
    if run.step in cfg.lr_milestones:  # the lr lives in the optimizer's state: a resumed run keeps it
        for group in optimizer.param_groups:
            group["lr"] *= cfg.lr_gamma
    return values


def _stop_if_diverged(run: _Run, values: dict[str, float]) -> None:
    bad = [name for name, v in values.items() if not math.isfinite(v)]
    if not bad:
        return
    kept = (f"the last good checkpoint ({run.ckpt_path}, after epoch {run.epoch}, step {run.step}) is kept"
            if run.ckpt_path.is_file() else "no checkpoint had been written yet")
    raise TrainingDiverged(
        f"training diverged at epoch {run.epoch + 1}, step {run.step + 1}: loss "
        + ", ".join(f"'{n}' = {values[n]}" for n in bad)
        + f"; {kept}. Lower the learning rate (now {run.cfg.lr}) or check the data.")


def _log_step(run: _Run, values: dict[str, float], last: bool, bar: tqdm, writer: Any) -> None:
    """A row of losses.csv (and TensorBoard scalars) every ``log_every`` steps and at the last one."""
    if run.step % run.cfg.log_every and not last:
        return
    lr = run.optimizer.param_groups[0]["lr"]
    run.loss_log.write(run.epoch + 1, run.step, values, lr, run.seconds())
    bar.set_postfix(epoch=run.epoch + 1, loss=f"{values['total']:.4f}", refresh=False)
    if writer is not None:
        for name, v in values.items():
            writer.add_scalar(f"loss/{name}", v, run.step)
        writer.add_scalar("lr", lr, run.step)


def _epoch_batches(run: _Run, batches_for_epoch: Callable[[int], Iterable]) -> tuple[Iterator, int | None]:
    """The current epoch's batches, numbered, less those the restored weights have seen; and their count."""
    if run.batches_done:  # resuming inside an epoch: its batches come from the state at its start
        set_rng_states(run.ckpt["epoch_rng"])
    run.epoch_rng = rng_states()
    batches = batches_for_epoch(run.epoch)
    n_batches = len(batches) if hasattr(batches, "__len__") else None
    numbered = enumerate(batches)
    if run.batches_done:  # drop the batches the weights have seen, then go on from the saved state
        for _ in itertools.islice(numbered, run.batches_done):
            pass
        set_rng_states(run.ckpt["rng"])
        run.batches_done = 0
    return numbered, n_batches


def _run_epoch(run: _Run, batches_for_epoch: Callable[[int], Iterable], bar: tqdm, writer: Any) -> None:
    """Train on the rest of the current epoch; checkpoint at its end (per ``checkpoint_every``) or where the
    schedule stops inside it."""
    cfg = run.cfg
    numbered, n_batches = _epoch_batches(run, batches_for_epoch)
    if bar.total is None and n_batches and (cfg.budget_seconds is None or cfg.max_steps is not None):
        planned = cfg.epochs * n_batches
        bar.total = planned if cfg.max_steps is None else min(planned, cfg.max_steps)
    while True:
        run.clock.start()  # the CPU clock counts the batch's loading
        k, batch = next(numbered, (None, None))
        if k is None:
            break
        values = _train_step(run, batch)
        bar.update(1)
        stop = run.stop_in_epoch()
        last = stop or (n_batches is not None and k == n_batches - 1 and run.epoch + 1 == cfg.epochs)
        _log_step(run, values, last, bar, writer)
        if stop:
            _save(run, final=True, in_epoch=k + 1)
            return
    run.epoch += 1
    if run.done() or (run.epoch % cfg.checkpoint_every == 0
                      and time.perf_counter() - run.last_save >= cfg.checkpoint_min_seconds):
        _save(run, final=run.done())


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
    run = _start_run(model, loss_fn, cfg, workdir, torch.device(device), run_key)
    _restore(run)
    run.started = run.last_save = time.perf_counter()
    if run.done():
        _progress(run, run.seconds_before, 0.0, True)
        model.eval()
        return model
    writer = _tensorboard(workdir)
    bar = tqdm(total=cfg.max_steps, initial=run.step, desc="train", unit="step", mininterval=5,
               disable=not cfg.progress)
    model.train()
    try:
        while not run.done():
            _run_epoch(run, batches_for_epoch, bar, writer)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    model.eval()
    return model


__all__ = ["TrainConfig", "TrainingDiverged", "fit", "resume_key", "data_sha256", "make_loader", "EpochSampler", "seed_worker", "to_device",
           "load_checkpoint", "read_progress", "rng_states", "set_rng_states", "CHECKPOINT", "LOSS_LOG"]
