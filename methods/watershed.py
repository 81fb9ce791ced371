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
default grid has 384 combinations for RGB images (288 for gray, which skip ``exg``); on six 128x128
images it takes a few seconds on one core. The returned state is a plain dict of the chosen
parameters (plus the proxy score and what it was tuned on), and ``train`` writes every combination's
score to ``<workdir>/watershed_grid.json``. With
``tune = False``, or no tuning images, the fixed defaults (``signal``, ``threshold_factor``, ...) are
the state.

:func:`proxy_score` is a *proxy* for the paper's APseg, fast enough for tuning: for each IoU threshold
0.5, 0.55, ..., 0.95, an image scores TP / (TP + FP + FN) (the Data Science Bowl 2018 score) with
predicted and true objects matched one-to-one at IoU > threshold; the image's proxy is the mean over
thresholds, and a set's the mean over images. The reported numbers come from objguided.metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Iterable, Iterator, Literal, Sequence, get_args

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed as sk_watershed

from methods import register
from methods.base import Instance, Method
from objguided.config import Count, Len, NonNegFloat, PosInt
from objguided.errors import ConfigError

Signal = Literal["gray", "inverted", "exg", "auto"]
SIGNALS = get_args(Signal)
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())
PARAMS = ("signal", "background_sigma", "threshold_factor", "min_distance", "sigma", "min_size")
MIN_SCORE = 1e-3


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
        grid, scores = grid_search([s.image for s in samples], [s.labels for s in samples], cfg)
        best = int(np.argmax(scores))  # first maximum: grid order breaks ties
        state = {**grid[best], "proxy_score": float(scores[best]), "tuned_on": cfg.tune_on,
                 "n_tune_images": len(samples)}
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


def raw_signal(image: np.ndarray, signal: str) -> np.ndarray:
    """The un-normalised signal (larger = more object-like); ``auto`` and ``exg`` on gray resolved."""
    if signal == "exg":
        if image.ndim != 3:
            return raw_signal(image, "auto")
        rgb = image.astype(np.float32)
        return 2 * rgb[..., 1] - rgb[..., 0] - rgb[..., 2]
    gray = _gray(image)
    if signal == "gray":
        return gray
    if signal == "inverted":
        return -gray
    if signal == "auto":
        lo, hi = float(gray.min()), float(gray.max())
        if hi <= lo:
            return gray
        return -gray if np.mean(gray > threshold_otsu(gray)) > 0.5 else gray
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


def split_objects(fg: np.ndarray, dist: np.ndarray, min_distance: int) -> np.ndarray:
    """Watershed of ``-dist`` within ``fg`` from the peaks of ``dist`` (>= 1 marker per component)."""
    comps, n = ndi.label(fg)
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
    if n_true == 0 and n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    inter = np.bincount(g.ravel() * len(p_ids) + p.ravel(), minlength=len(g_ids) * len(p_ids))
    inter = inter.reshape(len(g_ids), len(p_ids)).astype(np.float64)
    area_g, area_p = inter.sum(1), inter.sum(0)
    inter = inter[g_off:, p_off:]
    iou = inter / (area_g[g_off:, None] + area_p[None, p_off:] - inter)
    # at IoU > 0.5 every object has at most one partner, so matching is counting the pairs above t
    scores = []
    for t in thresholds:
        tp = int(np.count_nonzero(iou > t))
        scores.append(tp / (n_true + n_pred - tp))
    return float(np.mean(scores))


def grid_search(images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                cfg: WatershedConfig) -> tuple[list[dict], np.ndarray]:
    """Every grid combination (as a parameter dict) and its mean proxy score over the images.

    Intermediate results are shared: one signal per (image, signal, background_sigma), one foreground and distance per
    factor, one watershed per (sigma, min_distance), and only ``min_size`` is applied per combination.
    """
    signals = [s for s in dict.fromkeys(cfg.signals)
               if s != "exg" or any(im.ndim == 3 for im in images)]  # exg needs colour
    backgrounds = list(dict.fromkeys(float(v) for v in cfg.background_sigmas))
    factors = list(dict.fromkeys(float(v) for v in cfg.threshold_factors))
    min_distances = list(dict.fromkeys(int(v) for v in cfg.min_distances))
    sigmas = list(dict.fromkeys(float(v) for v in cfg.sigmas))
    min_sizes = list(dict.fromkeys(int(v) for v in cfg.min_sizes))
    grid = [dict(signal=sg, background_sigma=bg, threshold_factor=f, min_distance=md, sigma=sm, min_size=ms)
            for sg in signals for bg in backgrounds for f in factors for md in min_distances for sm in sigmas
            for ms in min_sizes]
    index = {tuple(g.values()): k for k, g in enumerate(grid)}
    totals = np.zeros(len(grid))
    for image, truth in zip(images, truths):
        for sg, bg in ((sg, bg) for sg in signals for bg in backgrounds):
            s = signal_map(image, sg, cfg.signal_sigma, bg)
            for f in factors:
                if s is None:
                    fg = np.zeros(image.shape[:2], bool)
                else:
                    fg, _ = foreground(s, f, cfg.fill_holes)
                for sm in sigmas:
                    dist = smoothed_distance(fg, sm)
                    for md in min_distances:
                        labels = split_objects(fg, dist, md)
                        for ms in min_sizes:
                            k = index[(sg, bg, f, md, sm, ms)]
                            totals[k] += proxy_score(remove_small(labels, ms), truth)
    return grid, totals / max(len(images), 1)


__all__ = ["Watershed", "WatershedConfig", "proxy_score", "segment", "grid_search", "check_config"]
