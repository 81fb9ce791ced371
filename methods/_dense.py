"""Shared plumbing of the dense (per-pixel) baselines ``dcan`` and ``cosine_embedding``.

Not a method (the leading underscore keeps it out of the registry). It holds what the two have in common:

- **Training fields** (:class:`DenseTrainFields`, the first fields of both configs, each declared with its
  allowed values), mapped onto the shared trainer's :class:`~objguided.engine.trainer.TrainConfig`.
- **Input** (:func:`prepare_image`): gray repeated to 3 channels, optionally blurred (Gaussian,
  ``input_sigma`` px), then *standardised per image* (zero mean, unit variance over all its pixels and
  channels), so fluorescence (dark background) and stained (light background) images reach the
  network on the same scale. Padding (for the networks' stride) is zeros, i.e. the image's mean.
- **Training samples** (:class:`DenseSamples`), indexed ``(index, sample_seed)`` as the trainer's
  :func:`~objguided.engine.trainer.make_loader` wants: a random square crop of side ``input_size * f``
  (``f`` drawn from ``crop_scales``; the pixel scale stays near 1 because these fully convolutional
  networks predict at the image's own resolution) resampled to ``input_size`` (bilinear image, nearest
  labels, the outside is 0 = the mean), then a random element of the dihedral group (flips, transpose)
  and a small intensity jitter (gain 0.8-1.2, offset +-0.2 standard deviations). ``augment = False``:
  the whole image letterboxed to ``input_size``, nothing random. The method turns the cropped label map
  into its targets (``make_targets(labels, rng)``).
- **Tuning** (:func:`tune`): the network runs once per val image; a grid of post-processing parameters
  is scored on those maps with :func:`objguided_methods.watershed.proxy_score` (the mean over IoU 0.5:0.95 of
  TP / (TP + FP + FN), a fast proxy for APseg) and the best is kept (first in grid order on ties),
  with a progress line in the run's log at most every 10 s. :func:`tune_widened` then grows an axis whose
  best value lies on its grid's edge, up to ``max_widen`` steps (:func:`objguided_methods._tuning.widen`), and
  returns what happened (kept in the state as ``tuning.widening``).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence

import numpy as np
from scipy import ndimage as ndi

from objguided.config import Count, Len, NonNegFloat, PosFloat, PosInt
from objguided.errors import ConfigError
from objguided_methods._tuning import Axis, Progress, widen
from objguided_methods.base import TrainSamples, cpu_state, fit_samples, read_pairs


@dataclass
class DenseTrainFields:
    """The training fields both dense baselines share (the first fields of their configs)."""

    epochs: PosInt = 100000  # an upper bound: max_steps is the budget
    max_steps: PosInt | None = 40000  # optimizer steps in all
    budget_seconds: PosFloat | None = None  # stop once training has used this much CPU/GPU time (the trainer's)
    batch_size: PosInt = 8
    lr: PosFloat = 1e-4
    weight_decay: NonNegFloat = 0.0
    optimizer: Literal["adam", "adamw", "sgd", "nadam"] = "adam"  # the shared trainer's; sgd: momentum 0.9
    lr_milestones: list[PosInt] = field(default_factory=list)  # steps at which lr *= lr_gamma
    lr_gamma: PosFloat = 0.1
    input_size: PosInt = 256  # training crop side, px (a multiple of the network's stride: the method's check)
    augment: bool = True
    crop_scales: Annotated[list[PosFloat], Len(1)] = field(default_factory=lambda: [0.8, 0.9, 1.0, 1.1, 1.25])
    input_sigma: NonNegFloat = 0.0  # Gaussian blur of the input, px (train and predict)
    amp: bool = True  # CUDA only
    num_workers: Count = 0
    checkpoint_every: PosInt = 1
    checkpoint_min_seconds: NonNegFloat = 30.0
    log_every: PosInt = 10
    grad_clip: PosFloat | None = None
    progress: bool = True  # tqdm bar
    # -- tuning of the post-processing on the val split --
    tune_on: Literal["val", "none"] = "val"  # none: keep the configured post-processing parameters
    max_tune_images: Count = 16  # 0 = all val images
    max_widen: Count = 3  # steps an axis may grow past its grid's edge when the best lies there; 0 = never


def check_input_size(cfg: DenseTrainFields, where: str, multiple: int) -> None:
    """``input_size`` must be a multiple of the network's ``multiple`` (its deepest stride)."""
    if cfg.input_size % multiple:
        raise ConfigError(f"{where}.input_size: expected a multiple of {multiple} (the network's stride), "
                          f"got {cfg.input_size!r}")


def train_config(cfg: DenseTrainFields):
    """The shared trainer's TrainConfig for a dense baseline's config."""
    from objguided.engine.trainer import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=float(cfg.lr),
                       weight_decay=float(cfg.weight_decay), optimizer=cfg.optimizer, amp=cfg.amp,
                       num_workers=cfg.num_workers, checkpoint_every=cfg.checkpoint_every,
                       checkpoint_min_seconds=float(cfg.checkpoint_min_seconds), max_steps=cfg.max_steps,
                       log_every=cfg.log_every, grad_clip=None if cfg.grad_clip is None else float(cfg.grad_clip),
                       progress=cfg.progress, lr_milestones=[int(m) for m in cfg.lr_milestones],
                       lr_gamma=float(cfg.lr_gamma), budget_seconds=cfg.budget_seconds)


# ---------------------------------------------------------------------------------------------------
# input


def prepare_image(image: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """uint8 HxW or HxWx3 -> float32 HxWx3, (optionally blurred and) standardised per image."""
    img = image.astype(np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] > 3:
        img = img[..., :3]
    if sigma > 0:
        img = ndi.gaussian_filter(img, (sigma, sigma, 0))
    std = float(img.std())
    return ((img - float(img.mean())) / (std if std > 1e-6 else 1.0)).astype(np.float32)


def to_tensor(img: np.ndarray):
    """float32 HxWxC -> torch [C, H, W]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def pad_to_multiple(x, multiple: int):
    """Zero-pad a [B, C, H, W] tensor at the bottom/right to multiples of ``multiple``; returns (x, (H, W))."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, (h, w)


# ---------------------------------------------------------------------------------------------------
# training samples


def crop_window(height: int, width: int, size: int, rng: np.random.Generator | None, scales: Sequence[float],
                augment: bool) -> tuple[float, float, float]:
    """(side, cx, cy) of the square to resample to ``size`` px."""
    if not augment or rng is None:
        return float(max(height, width)), width / 2, height / 2
    side = size * float(rng.choice(np.asarray(scales, float)))

    def centre(n: int) -> float:
        lo, hi = min(side / 2, n / 2), max(n - side / 2, n / 2)
        return float(rng.uniform(lo, hi))

    return side, centre(width), centre(height)


def random_sample(img: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator | None,
                  scales: Sequence[float], augment: bool) -> tuple[np.ndarray, np.ndarray]:
    """One training sample (float32 [S, S, C] image, int32 [S, S] labels) of a prepared image."""
    from objguided.data.augment import warp_crop

    side, cx, cy = crop_window(*img.shape[:2], size, rng, scales, augment)
    out = warp_crop(img, side, cx, cy, size, order=1)
    lab = warp_crop(labels.astype(np.int32), side, cx, cy, size, order=0)
    if augment and rng is not None:
        if rng.random() < 0.5:
            out, lab = out[:, ::-1], lab[:, ::-1]
        if rng.random() < 0.5:
            out, lab = out[::-1], lab[::-1]
        if rng.random() < 0.5:
            out, lab = out.transpose(1, 0, 2), lab.T
        out = out * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.2, 0.2))
    return np.ascontiguousarray(out, np.float32), np.ascontiguousarray(lab, np.int32)


class DenseSamples(TrainSamples):
    """Item: (image tensor [3, S, S], dict of target tensors from ``make_targets(labels, rng)``); the pairs
    are kept prepared (:func:`prepare_image`), and ``loss`` is the method's own."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], cfg: DenseTrainFields,
                 make_targets: Callable[[np.ndarray, np.random.Generator], dict], loss: Callable):
        super().__init__([(prepare_image(image, cfg.input_sigma), np.asarray(labels, np.int32))
                          for image, labels in pairs], cfg)
        self.make_targets, self.loss = make_targets, loss

    def encode(self, image, labels, rng):
        import torch

        img, lab = random_sample(image, labels, self.cfg.input_size, rng, self.cfg.crop_scales, self.cfg.augment)
        targets = self.make_targets(lab, rng)
        return to_tensor(img), {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in targets.items()}

    @staticmethod
    def collate(batch):
        """Images and every target stacked into one tensor each."""
        import torch

        images = torch.stack([b[0] for b in batch])
        keys = batch[0][1].keys()
        return images, {k: torch.stack([b[1][k] for b in batch]) for k in keys}


# ---------------------------------------------------------------------------------------------------
# post-processing helpers and val tuning


def relabel(labels: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Drop objects of fewer than ``min_size`` pixels and renumber the rest 1..n (int32)."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    lut = np.zeros(sizes.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels]


def tune_images(val_set, max_images: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``max_images`` (0 = all) evenly spaced (image, labels) pairs of the val split."""
    if val_set is None or len(val_set) == 0:
        return []
    idx = list(range(len(val_set)))
    if max_images and len(idx) > max_images:
        idx = np.linspace(0, len(idx) - 1, max_images).round().astype(int).tolist()
    return [(val_set[i].image, val_set[i].labels) for i in idx]


def grid(spec: dict[str, Sequence]) -> list[dict]:
    """Every combination of the lists in ``spec`` (insertion order), duplicates in a list removed."""
    keys = list(spec)
    values = [list(dict.fromkeys(spec[k])) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def tune(maps: Sequence[Any], truths: Sequence[np.ndarray], combos: list[dict],
         segment: Callable[[Any, dict], Any], finish_combos: list[dict] | None = None,
         finish: Callable[[Any, Any, dict], np.ndarray] | None = None,
         what: str | None = None) -> tuple[dict, float, list[dict], float]:
    """Score every combination on the val maps; returns (best params, best score, table, seconds).

    ``segment(map, params)`` gives a label map, or, when ``finish`` is given, an intermediate result that
    ``finish(map, intermediate, finish_params)`` turns into a label map for each of ``finish_combos``
    (the costly step runs once per combination of ``combos``). The best is the first maximum in grid order.
    ``what`` names the progress lines (:class:`objguided_methods._tuning.Progress`; None: silent).
    """
    from objguided_methods.watershed import proxy_score

    t0 = time.perf_counter()
    finals = finish_combos if finish is not None else [{}]
    table = [{**c, **f} for c in combos for f in finals]
    scores = np.zeros(len(table))
    progress = Progress(what or "", len(maps) * len(combos))
    best_row = best_value = None  # over the images scored in full so far
    for i, (m, truth) in enumerate(zip(maps, truths)):
        k = 0
        for j, params in enumerate(combos):
            out = segment(m, params)
            for extra in finals:
                labels = out if finish is None else finish(m, out, extra)
                scores[k] += proxy_score(labels, truth)
                k += 1
            if what:
                progress.update(i * len(combos) + j + 1, best_row, best_value,
                                f"image {i + 1}/{len(maps)}, combination {j + 1}/{len(combos)}")
        best = int(np.argmax(scores))
        best_row, best_value = table[best], float(scores[best]) / (i + 1)
    scores /= max(len(maps), 1)
    best = int(np.argmax(scores))
    rows = [{**row, "proxy_score": float(v)} for row, v in zip(table, scores)]
    return table[best], float(scores[best]), rows, time.perf_counter() - t0


def tune_widened(maps: Sequence[Any], truths: Sequence[np.ndarray], combos: list[dict],
                 segment: Callable[[Any, dict], Any], finish_combos: list[dict],
                 finish: Callable[[Any, Any, dict], np.ndarray], axes: Sequence[Axis], max_widen: int,
                 what: str) -> tuple[dict, float, list[dict], float, dict]:
    """:func:`tune`, then :func:`objguided_methods._tuning.widen` of the axes whose best lies on their grid's edge;
    returns (best params, best score, grid table, seconds, widening record)."""
    t0 = time.perf_counter()
    best, score, rows, _ = tune(maps, truths, combos, segment, finish_combos, finish, what)
    seg_keys, fin_keys = list(combos[0]), list(finish_combos[0])

    def score_one(params: dict) -> float:
        return tune(maps, truths, [{k: params[k] for k in seg_keys}], segment,
                    [{k: params[k] for k in fin_keys}], finish)[1]

    best, score, record = widen(best, score, axes, score_one, max_widen, what)
    return best, score, rows, time.perf_counter() - t0, record


def write_tuning(workdir: Path | None, name: str, record: dict) -> None:
    if workdir is None:
        return
    from objguided.engine.atomic import write_json

    write_json(Path(workdir) / name, record)


def train_dense(name: str, build_net: Callable[[], Any], net_spec: dict, train_set, val_set, cfg, workdir: Path | None,
                device: str, targets, loss_fn, tune_post: Callable) -> dict:
    """The training of a dense method: fit the net on ``train_set``, tune its post-processing on ``val_set``.

    Returns the state both dense methods keep: weights, ``net_spec`` (to rebuild the net), the tuned
    post-processing parameters and a summary of the tuning (whose full grid goes to
    ``<workdir>/<name>_tuning.json``).
    """
    pairs = read_pairs(name, train_set)
    tcfg = train_config(cfg)
    net = fit_samples(name, build_net(), DenseSamples(pairs, cfg, targets, loss_fn), cfg, tcfg, pairs, train_set.ids,
                      workdir, device)
    post, tuning = tune_post(net, val_set, cfg, device)
    write_tuning(workdir, f"{name}_tuning.json", tuning)
    return {"model": cpu_state(net), "net": net_spec,
            "post": post, "tuning": {k: v for k, v in tuning.items() if k != "grid"},
            "train_config": dataclasses.asdict(tcfg)}


def tuned_params(state: dict | None, cfg, keys: Sequence[str]) -> dict:
    """The post-processing parameters ``keys``: the tuned ones in ``state``, else the config's."""
    params = {k: getattr(cfg, k) for k in keys}
    if state and state.get("post"):
        params.update({k: state["post"][k] for k in keys if k in state["post"]})
    return params


__all__ = ["DenseTrainFields", "DenseSamples", "check_input_size", "train_config",
           "prepare_image", "to_tensor", "pad_to_multiple", "random_sample", "relabel",
           "tune_images", "grid", "tune", "tune_widened", "write_tuning", "train_dense", "tuned_params"]
