"""``watershed``: a classical, non-learned baseline (threshold + distance-transform watershed).

Per image:

1. **Signal.** One channel ``s`` in [0, 1] is computed from the image by one of
   ``gray`` (luminance 0.299 R + 0.587 G + 0.114 B, or the gray image itself),
   ``inverted`` (1 - gray: dark objects on a light background),
   ``exg`` (excess green 2G - R - B, for plants; on a gray image it falls back to ``auto``) or
   ``auto`` (``gray`` or ``inverted`` per image: the polarity whose Otsu foreground is the smaller
   part of the image, as objects are usually the minority).
   The channel is smoothed by a Gaussian of ``signal_sigma`` pixels; when ``background_sigma`` > 0,
   uneven illumination is flattened by subtracting the channel's Gaussian blur of that sigma; then it
   is rescaled to [0, 1] by its own 0.5 and 99.5 percentiles (values outside are clipped).
2. **Foreground.** ``fg = s > t`` with ``t = threshold_factor * otsu(s)`` (holes filled when
   ``fill_holes``). An image whose signal is flat has no objects.
3. **Markers.** The Euclidean distance transform of ``fg``, smoothed by a Gaussian of ``sigma`` pixels,
   has its local maxima at least ``min_distance`` pixels apart taken as markers (every connected
   component of ``fg`` gets at least one, at its distance maximum).
4. **Watershed** of the negated smoothed distance from the markers, restricted to ``fg``; objects of
   fewer than ``min_size`` pixels are dropped.

**Score of an object** (its confidence, used to rank detections for AP): the mean, over the object's
pixels ``p``, of the foreground confidence ``c(p) = clip((s(p) - t) / (1 - t), 0, 1)`` -- how far the
pixel's normalised signal lies above the threshold, as a fraction of the headroom between the
threshold and the top of the signal's range -- floored at 1e-3 so every score is in (0, 1]. Objects
well above the threshold (bright, contrasted) score near 1; objects that barely pass it score near 0.

**Training** is a grid search: every combination of ``signals`` x ``background_sigmas`` x
``threshold_factors`` x ``min_distances`` x ``sigmas`` x ``min_sizes`` is run on the tuning images
(``tune_on``: the val split, the train split, or both; at most ``max_tune_images`` of them, evenly
spaced), scored by :func:`proxy_score`, and the best mean (first in grid order on ties) is kept. The
default grid has 384 combinations for RGB images (288 for gray, which skip ``exg``). The images are
spread over ``tune_jobs`` processes (0, the default: the CPUs the job was given, ``OMP_NUM_THREADS`` when
set, else every core the process may use), and work that cannot depend on
the parameter varied is done once (:func:`image_scores`). A line of progress (images done, best so far)
goes to the run's log at most every 10 s. A numeric parameter whose best value lies on its grid's edge
is then tried one step further out, with the others at their best, up to ``max_widen`` steps
(:func:`objguided_methods._tuning.widen`); what happened is logged and kept in the state as ``widening``
(``at_edge_before``, ``steps``, ``at_edge_after``: the parameters still on an edge that the grid could
grow past, ``at_bound``: those on the end of their range). The returned state
is a plain dict of the chosen parameters (plus the proxy score, what it was tuned on and ``widening``),
and ``train`` writes every combination's score to ``<workdir>/watershed_grid.json``. With
``tune = False``, or no tuning images, the fixed defaults (``signal``, ``threshold_factor``, ...) are
the state.

:func:`proxy_score` is a *proxy* for the paper's APseg, fast enough for tuning: for each IoU threshold
0.5, 0.55, ..., 0.95, an image scores TP / (TP + FP + FN) (the Data Science Bowl 2018 score) with
predicted and true objects matched one-to-one at IoU > threshold; the image's proxy is the mean over
thresholds, and a set's the mean over images. The reported numbers come from objguided.metrics.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Iterable, Iterator, Literal, Sequence, get_args

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed as sk_watershed

from objguided.config import Count, Len, NonNegFloat, PosInt
from objguided.errors import ConfigError
from objguided_methods import register
from objguided_methods._tuning import Axis, Progress, widen
from objguided_methods.base import Instance, Method

Signal = Literal["gray", "inverted", "exg", "auto"]
SIGNALS = get_args(Signal)
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())
PARAMS = ("signal", "background_sigma", "threshold_factor", "min_distance", "sigma", "min_size")
MIN_SCORE = 1e-3

log = logging.getLogger(__name__)


@dataclass
class WatershedConfig:
    # -- the search grid (train) --
    signals: Annotated[list[Signal], Len(1)] = field(default_factory=lambda: ["auto", "gray", "inverted", "exg"])
    background_sigmas: Annotated[list[NonNegFloat], Len(1)] = field(default_factory=lambda: [0.0, 10.0])
    threshold_factors: Annotated[list[NonNegFloat], Len(1)] = field(default_factory=lambda: [0.7, 0.85, 1.0, 1.2])
    min_distances: Annotated[list[PosInt], Len(1)] = field(default_factory=lambda: [3, 5, 8])
    sigmas: Annotated[list[NonNegFloat], Len(1)] = field(default_factory=lambda: [0.0, 1.0])
    min_sizes: Annotated[list[Count], Len(1)] = field(default_factory=lambda: [10, 30])
    # -- the fixed defaults: the state when untuned --
    signal: Signal = "auto"
    background_sigma: NonNegFloat = 0.0  # pixels; 0 = no illumination flattening
    threshold_factor: NonNegFloat = 1.0
    min_distance: PosInt = 5
    sigma: NonNegFloat = 1.0
    min_size: Count = 10
    # -- fixed, not tuned --
    signal_sigma: NonNegFloat = 1.0  # Gaussian pre-smoothing of the signal, pixels
    fill_holes: bool = True
    tune: bool = True
    tune_on: Literal["val", "train", "both"] = "val"
    max_tune_images: Count = 32  # 0 = all
    tune_jobs: Count = 0  # processes the tuning images are spread over; 0 = the CPUs the job was given
    max_widen: Count = 3  # steps an axis may grow past its grid's edge when the best lies there; 0 = never


def check_config(cfg: WatershedConfig, where: str = "methods.watershed") -> None:
    """Nothing beyond the declarations (kept for the callers of ``check_config``)."""


@register
class Watershed(Method):
    """Otsu foreground + distance-transform watershed, with its parameters grid-searched on val."""

    name = "watershed"
    Config = WatershedConfig
    uses_gpu = False

    def train(self, train_set, val_set, cfg: WatershedConfig, workdir: Path, device: str) -> dict:
        check_config(cfg, where=f"methods.{self.name}")
        defaults = {k: getattr(cfg, k) for k in PARAMS}
        sets = {"val": [val_set], "train": [train_set], "both": [train_set, val_set]}[cfg.tune_on]
        refs = [(ds, i) for ds in sets if ds is not None for i in range(len(ds))]
        if cfg.max_tune_images and len(refs) > cfg.max_tune_images:
            keep = np.linspace(0, len(refs) - 1, cfg.max_tune_images).round().astype(int)
            refs = [refs[k] for k in keep]
        if not cfg.tune or not refs:
            return {**defaults, "proxy_score": None, "tuned_on": None, "n_tune_images": 0}
        samples = [ds[i] for ds, i in refs]
        t0 = time.perf_counter()
        chosen, score, grid, scores, widening = tune([s.image for s in samples], [s.labels for s in samples], cfg)
        state = {**chosen, "proxy_score": score, "tuned_on": cfg.tune_on, "n_tune_images": len(samples),
                 "widening": widening}
        if workdir is not None:
            from objguided.engine.atomic import write_json

            write_json(Path(workdir) / "watershed_grid.json", {
                "chosen": state, "seconds": round(time.perf_counter() - t0, 3),
                "images": [s.id for s in samples],
                "grid": [{**g, "proxy_score": float(v)} for g, v in zip(grid, scores)]})
        return state

    def predict(self, state: dict | None, images: Iterable[np.ndarray], cfg: WatershedConfig,
                device: str) -> Iterator[list[Instance]]:
        params = params_from(state, cfg)
        for image in images:
            labels, conf = segment(image, **params, signal_sigma=cfg.signal_sigma, fill_holes=cfg.fill_holes)
            yield instances_with_scores(labels, conf)


# ---------------------------------------------------------------------------------------------------
# configuration


def params_from(state: dict | None, cfg: WatershedConfig) -> dict:
    """The parameters to predict with: the tuned ``state``'s, else the config's defaults."""
    params = {k: getattr(cfg, k) for k in PARAMS}
    if state:
        params.update({k: state[k] for k in PARAMS if k in state})
    return params


# ---------------------------------------------------------------------------------------------------
# segmentation


def _gray(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float32)
    if img.ndim == 3:
        return img @ np.array([0.299, 0.587, 0.114], np.float32)
    return img


def resolve_signal(image: np.ndarray, signal: str) -> str:
    """The signal ``raw_signal`` computes for ``image``: ``auto`` resolved to ``gray`` or ``inverted``
    (and ``exg`` on a gray image to that), so tuning computes each distinct signal once."""
    if signal == "exg" and image.ndim != 3:
        signal = "auto"
    if signal != "auto":
        return signal
    gray = _gray(image)
    if float(gray.max()) <= float(gray.min()):
        return "gray"
    return "inverted" if np.mean(gray > threshold_otsu(gray)) > 0.5 else "gray"


def raw_signal(image: np.ndarray, signal: str) -> np.ndarray:
    """The un-normalised signal (larger = more object-like); ``auto`` and ``exg`` on gray resolved."""
    signal = resolve_signal(image, signal)
    if signal == "exg":
        rgb = image.astype(np.float32)
        return 2 * rgb[..., 1] - rgb[..., 0] - rgb[..., 2]
    if signal == "gray":
        return _gray(image)
    if signal == "inverted":
        return -_gray(image)
    raise ConfigError(f"methods.watershed.signal: unknown signal {signal!r} (known: {', '.join(SIGNALS)})")


def signal_map(image: np.ndarray, signal: str, signal_sigma: float = 1.0,
               background_sigma: float = 0.0) -> np.ndarray | None:
    """The smoothed (and flattened) signal rescaled to [0, 1] by its 0.5/99.5 percentiles; None if flat."""
    s = raw_signal(image, signal)
    if signal_sigma > 0:
        s = ndi.gaussian_filter(s, signal_sigma)
    if background_sigma > 0:
        s = s - ndi.gaussian_filter(s, background_sigma, mode="reflect")
    lo, hi = np.percentile(s, [0.5, 99.5])
    if hi - lo < 1e-6:
        lo, hi = float(s.min()), float(s.max())
        if hi - lo < 1e-6:
            return None
    return np.clip((s - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def foreground(s: np.ndarray, threshold_factor: float, fill_holes: bool = True) -> tuple[np.ndarray, float]:
    t = min(float(threshold_factor) * float(threshold_otsu(s)), 1.0 - 1e-6)
    fg = s > t
    if fill_holes:
        fg = ndi.binary_fill_holes(fg)
    return fg, t


def smoothed_distance(fg: np.ndarray, sigma: float) -> np.ndarray:
    dist = ndi.distance_transform_edt(fg).astype(np.float32)
    return ndi.gaussian_filter(dist, sigma) if sigma > 0 else dist


def split_objects(fg: np.ndarray, dist: np.ndarray, min_distance: int,
                  components: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """Watershed of ``-dist`` within ``fg`` from the peaks of ``dist`` (>= 1 marker per component);
    ``components``: ``ndi.label(fg)``, when the caller already has it."""
    comps, n = components if components is not None else ndi.label(fg)
    if n == 0:
        return np.zeros(fg.shape, np.int32)
    # one label for all of fg (per-component search is much slower); a component whose peaks were all
    # suppressed by a neighbour's gets its marker below
    peaks = peak_local_max(dist, min_distance=int(min_distance), labels=fg.astype(np.uint8), exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    missing = np.setdiff1d(np.arange(1, n + 1), comps[markers > 0])
    if missing.size:
        where = ndi.maximum_position(dist, comps, missing)
        for k, pos in enumerate(where):
            markers[pos] = len(peaks) + 1 + k
    return sk_watershed(-dist, markers, mask=fg).astype(np.int32)


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects of fewer than ``min_size`` pixels and renumber the rest 1..n."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(sizes.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels]


def confidence(s: np.ndarray, t: float) -> np.ndarray:
    """Per-pixel foreground confidence ``clip((s - t) / (1 - t), 0, 1)``."""
    return np.clip((s - t) / max(1.0 - t, 1e-6), 0.0, 1.0)


def segment(image: np.ndarray, signal: str, threshold_factor: float, min_distance: int, sigma: float,
            min_size: int, background_sigma: float = 0.0, signal_sigma: float = 1.0,
            fill_holes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Label map (int32, 0 = background) and per-pixel confidence of one image."""
    s = signal_map(image, signal, signal_sigma, background_sigma)
    if s is None:
        return np.zeros(image.shape[:2], np.int32), np.zeros(image.shape[:2], np.float32)
    fg, t = foreground(s, threshold_factor, fill_holes)
    labels = split_objects(fg, smoothed_distance(fg, sigma), min_distance)
    return remove_small(labels, min_size), confidence(s, t)


def instances_with_scores(labels: np.ndarray, conf: np.ndarray) -> list[Instance]:
    n = int(labels.max())
    if n == 0:
        return []
    ids = np.arange(1, n + 1)
    scores = np.maximum(np.asarray(ndi.mean(conf, labels, ids), np.float64), MIN_SCORE)
    return [Instance(mask=labels == i, score=float(min(sc, 1.0))) for i, sc in zip(ids, scores)]


# ---------------------------------------------------------------------------------------------------
# tuning


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted ids present, labels renumbered 0..k-1 by them): ``np.unique(return_inverse)``, faster."""
    flat = labels.ravel()
    if flat.size and np.issubdtype(flat.dtype, np.integer) and flat.min() >= 0 and flat.max() <= 4 * flat.size:
        ids = np.flatnonzero(np.bincount(flat))
        lut = np.zeros(int(ids[-1]) + 1, np.int64)
        lut[ids] = np.arange(ids.size)
        return ids, lut[flat]
    ids, inverse = np.unique(flat, return_inverse=True)
    return ids, inverse.ravel()


def _dsb_mean(iou: np.ndarray, n_true: int, n_pred: int, thresholds: Sequence[float]) -> float:
    """Mean over ``thresholds`` of TP / (TP + FP + FN) for a true x predicted IoU matrix."""
    if n_true == 0 and n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    # at IoU > 0.5 every object has at most one partner, so matching is counting the pairs above t
    scores = []
    for t in thresholds:
        tp = int(np.count_nonzero(iou > t))
        scores.append(tp / (n_true + n_pred - tp))
    return float(np.mean(scores))


def proxy_score(pred: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> float:
    """Mean over IoU thresholds of TP / (TP + FP + FN), one-to-one matching at IoU > t (a proxy for AP).

    >>> a = np.zeros((4, 4), int); a[:2] = 1; a[2:] = 2
    >>> proxy_score(a, a)
    1.0
    >>> proxy_score(np.zeros_like(a), a)
    0.0
    >>> b = a.copy(); b[2:] = 0   # one of two found
    >>> proxy_score(b, a)
    0.5
    """
    g_ids, g = _compact(truth)
    p_ids, p = _compact(pred)
    g_off = 1 if g_ids[0] == 0 else 0
    p_off = 1 if p_ids[0] == 0 else 0
    n_true, n_pred = len(g_ids) - g_off, len(p_ids) - p_off
    if n_true == 0 or n_pred == 0:
        return _dsb_mean(np.zeros((n_true, n_pred)), n_true, n_pred, thresholds)
    inter = np.bincount(g.ravel() * len(p_ids) + p.ravel(), minlength=len(g_ids) * len(p_ids))
    inter = inter.reshape(len(g_ids), len(p_ids)).astype(np.float64)
    area_g, area_p = inter.sum(1), inter.sum(0)
    inter = inter[g_off:, p_off:]
    iou = inter / (area_g[g_off:, None] + area_p[None, p_off:] - inter)
    return _dsb_mean(iou, n_true, n_pred, thresholds)


class TruthOverlaps:
    """One true label map, prepared once to score many predictions of its image by :func:`proxy_score`."""

    def __init__(self, truth: np.ndarray):
        ids, g = _compact(truth)
        self.off = 1 if ids[0] == 0 else 0
        self.n_true = len(ids) - self.off
        self.area = np.bincount(g, minlength=len(ids))[self.off:].astype(np.float64)
        self.pixels = np.flatnonzero(g >= self.off)  # only object pixels can overlap an object
        self.ids = g[self.pixels] - self.off

    def scores(self, labels: np.ndarray, min_sizes: Sequence[int]) -> np.ndarray:
        """``proxy_score(remove_small(labels, m), truth)`` for each ``m`` of ``min_sizes`` (one overlap count)."""
        flat = labels.ravel()
        n = int(flat.max()) + 1 if flat.size else 1
        area_p = np.bincount(flat, minlength=n)[1:].astype(np.float64)
        inter = np.bincount(self.ids * n + flat[self.pixels], minlength=self.n_true * n)
        inter = inter.reshape(self.n_true, n)[:, 1:].astype(np.float64)
        iou = inter / (self.area[:, None] + area_p[None, :] - inter)
        out = np.empty(len(min_sizes))
        for k, m in enumerate(min_sizes):
            keep = area_p >= max(int(m), 1)  # absent ids (area 0) are no object whatever the minimum
            out[k] = _dsb_mean(iou[:, keep], self.n_true, int(keep.sum()), IOU_THRESHOLDS)
        return out


def tuning_axes(cfg: WatershedConfig, images: Sequence[np.ndarray]) -> dict[str, list]:
    """The grid's values per parameter (grid order: PARAMS), duplicates dropped; ``exg`` needs colour."""
    return {"signal": [s for s in dict.fromkeys(cfg.signals) if s != "exg" or any(im.ndim == 3 for im in images)],
            "background_sigma": list(dict.fromkeys(float(v) for v in cfg.background_sigmas)),
            "threshold_factor": list(dict.fromkeys(float(v) for v in cfg.threshold_factors)),
            "min_distance": list(dict.fromkeys(int(v) for v in cfg.min_distances)),
            "sigma": list(dict.fromkeys(float(v) for v in cfg.sigmas)),
            "min_size": list(dict.fromkeys(int(v) for v in cfg.min_sizes))}


def _foreground_block(fg: np.ndarray, truth: TruthOverlaps, axes: dict) -> np.ndarray:
    """Scores [min_distance, sigma, min_size] of one foreground: one labelling, one distance per sigma, one
    watershed per (sigma, min_distance), ``min_size`` applied to the overlap counts."""
    block = np.empty((len(axes["min_distance"]), len(axes["sigma"]), len(axes["min_size"])))
    components = ndi.label(fg)
    for j, sm in enumerate(axes["sigma"]):
        dist = smoothed_distance(fg, sm)
        for i, md in enumerate(axes["min_distance"]):
            block[i, j] = truth.scores(split_objects(fg, dist, md, components), axes["min_size"])
    return block


def image_scores(image: np.ndarray, truth: np.ndarray, axes: dict, signal_sigma: float = 1.0,
                 fill_holes: bool = True) -> np.ndarray:
    """The proxy score of every combination of ``axes`` (in grid order) on one image.

    Work is shared wherever a result cannot depend on the parameter varied: one signal per distinct
    resolved (signal, background_sigma) (``auto`` is ``gray`` or ``inverted`` on every image), one block
    of scores per distinct foreground mask (the score depends on the foreground, not on the signal that
    made it), one watershed per (foreground, sigma, min_distance), one overlap count per watershed.
    """
    truth_ov = TruthOverlaps(truth)
    shape = tuple(len(axes[k]) for k in PARAMS)
    scores = np.empty(shape)
    by_signal: dict[tuple, np.ndarray] = {}
    by_fg: dict[bytes, np.ndarray] = {}
    for a, sg in enumerate(axes["signal"]):
        for b, bg in enumerate(axes["background_sigma"]):
            key = (resolve_signal(image, sg), bg)
            if key not in by_signal:
                s = signal_map(image, key[0], signal_sigma, bg)
                blocks = []
                for f in axes["threshold_factor"]:
                    fg = np.zeros(image.shape[:2], bool) if s is None else foreground(s, f, fill_holes)[0]
                    fg_key = hashlib.sha1(np.packbits(fg)).digest()
                    if fg_key not in by_fg:
                        by_fg[fg_key] = _foreground_block(fg, truth_ov, axes)
                    blocks.append(by_fg[fg_key])
                by_signal[key] = np.stack(blocks)
            scores[a, b] = by_signal[key]
    return scores.ravel()


def _image_scores_task(args: tuple) -> np.ndarray:
    return image_scores(*args)


def _jobs(jobs: int, n_images: int) -> int:
    """Worker processes: ``jobs``; when 0, the CPUs the job was given: ``OMP_NUM_THREADS`` when set (Snakemake
    sets it to a job's threads, 1 for a watershed train job), else every core this process may use. Never
    more than the images."""
    if not jobs:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        omp = os.environ.get("OMP_NUM_THREADS", "")
        jobs = min(jobs, int(omp)) if omp.isdigit() and int(omp) > 0 else jobs
    return max(1, min(int(jobs), n_images))


def search(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], axes: dict, signal_sigma: float = 1.0,
           fill_holes: bool = True, jobs: int = 1, what: str | None = None) -> tuple[list[dict], np.ndarray]:
    """Every combination of ``axes`` (as parameter dicts, grid order) and its mean proxy score over the
    images, the images spread over ``jobs`` processes (0: every core); ``what`` names the progress lines
    (None: silent)."""
    grid = [dict(zip(PARAMS, combo)) for combo in itertools.product(*(axes[k] for k in PARAMS))]
    tasks = [(image, truth, axes, signal_sigma, fill_holes) for image, truth in zip(images, truths)]
    per_image: list[np.ndarray | None] = [None] * len(tasks)
    progress = Progress(what or "", len(tasks), logger=log)

    def done(k: int, scores: np.ndarray) -> None:
        per_image[k] = scores
        if what:
            mean = np.mean([s for s in per_image if s is not None], axis=0)
            best = int(np.argmax(mean))
            progress.update(sum(s is not None for s in per_image), grid[best], float(mean[best]), "images")

    workers = _jobs(jobs, len(tasks))
    if workers == 1:
        for k, task in enumerate(tasks):
            done(k, _image_scores_task(task))
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(_image_scores_task, task): k for k, task in enumerate(tasks)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    totals = np.zeros(len(grid))
    for scores in per_image:  # in image order, so the sums do not depend on which worker finished first
        totals += scores
    return grid, totals / max(len(images), 1)


def grid_search(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], cfg: WatershedConfig,
                jobs: int = 1, what: str | None = None) -> tuple[list[dict], np.ndarray]:
    """Every combination of the config's grid (as a parameter dict) and its mean proxy score over the images."""
    return search(images, truths, tuning_axes(cfg, images), cfg.signal_sigma, cfg.fill_holes, jobs, what)


def widen_axes(cfg: WatershedConfig, axes: dict) -> list[Axis]:
    """The numeric axes that may grow past their edge, with their allowed ranges (the config's bounds)."""
    return [Axis("background_sigma", tuple(axes["background_sigma"]), lo=0.0),
            Axis("threshold_factor", tuple(axes["threshold_factor"]), lo=0.0),
            Axis("min_distance", tuple(axes["min_distance"]), lo=1, integer=True),
            Axis("sigma", tuple(axes["sigma"]), lo=0.0),
            Axis("min_size", tuple(axes["min_size"]), lo=0, integer=True)]


def widen_best(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], cfg: WatershedConfig, grid: list[dict],
               scores: np.ndarray, what: str = "watershed tuning") -> tuple[dict, float, dict]:
    """The grid's best (the first maximum: grid order breaks ties), then :func:`objguided_methods._tuning.widen`
    of the axes whose best lies on their edge; returns (best parameters, best proxy score, widening record)."""
    best = int(np.argmax(scores))

    def score_one(params: dict) -> float:
        one = {k: [params[k]] for k in PARAMS}
        return float(search(images, truths, one, cfg.signal_sigma, cfg.fill_holes, cfg.tune_jobs)[1][0])

    axes = widen_axes(cfg, tuning_axes(cfg, images))
    return widen(grid[best], float(scores[best]), axes, score_one, cfg.max_widen, what, logger=log)


def tune(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], cfg: WatershedConfig,
         what: str = "watershed tuning") -> tuple[dict, float, list[dict], np.ndarray, dict]:
    """:func:`grid_search` with progress lines, then :func:`widen_best`.

    Returns (best parameters, best proxy score, grid, grid scores, widening record).
    """
    grid, scores = grid_search(images, truths, cfg, cfg.tune_jobs, what)
    chosen, value, record = widen_best(images, truths, cfg, grid, scores, what)
    return chosen, value, grid, scores, record


__all__ = ["Watershed", "WatershedConfig", "proxy_score", "segment", "grid_search", "search", "image_scores",
           "tune", "widen_best", "check_config"]
