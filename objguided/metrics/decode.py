"""The one read-and-decode loop of the evaluator: a predictions JSON and its ground truth, image by image.

Both ``objguided score`` (:func:`objguided.metrics.score.score_predictions`) and the standalone
:func:`objguided.metrics.quality.quality_from_predictions` run through :func:`load` and :func:`map_images`,
so a file is read, checked and decoded by one piece of code whatever is computed from it.

- :func:`load` reads and checks every record (:func:`objguided.metrics.coco.check_records`), maps it to its
  scored GT image (an unknown id is an error) and groups the records by image, file order within; it also
  reads what the dataset's ``manifest.json`` says about partial truth (``datasets/README.md``, "Partial
  truth": ``truth_complete`` and ``markers``).
- :func:`map_images` cuts the images into contiguous chunks, parses each chunk's RLE strings at once into
  foreground runs (:func:`objguided.metrics.coco.parse_rle_counts`), reads each label map, checks the RLE
  size against it, and hands ``fn`` one :class:`ImageData` per image. Chunks run on forked worker
  processes when there are several cores (the per-image work is numpy on small arrays and PNG decoding,
  which hold the GIL: threads do not help); workers inherit the parsed JSON by fork and only ``fn``'s
  results travel back. A :class:`DataError` is raised in image order whatever the worker count.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from objguided.data.canonical import MANIFEST, read_label_map
from objguided.errors import DataError
from objguided.metrics.coco import (
    check_nonempty,
    check_records,
    gt_sources,
    load_json_list,
    parse_rle_counts,
    record_images,
    runs_to_pixels,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Truth:
    """What the dataset's manifest says about its truth; an image it does not name is complete."""

    partial: frozenset[str]  # ids whose label map annotates only some objects
    markers: dict[str, Path]  # id -> TRA marker label map (every cell of the frame)


@dataclass(frozen=True)
class Grouped:
    """A checked predictions file, its records grouped by scored GT image."""

    where: str  # the predictions file, for messages
    sources: list[tuple[str, Path]]  # (image id, label map) in scoring order
    n_records: int  # records in the file
    ids: list[str]
    counts: list[str]
    sizes: np.ndarray  # (N, 2)
    scores: np.ndarray  # (N,)
    soft: np.ndarray  # (N,), NaN: none
    perm: np.ndarray  # indices of the kept records, grouped by image in scoring order, file order within
    bounds: np.ndarray  # (images + 1,): image k's records are perm[bounds[k]:bounds[k + 1]]
    truth: Truth


@dataclass(frozen=True)
class ImageData:
    """One scored image: its label map and its predictions decoded to pixel lists."""

    k: int  # position in the scoring order
    image_id: str
    labels: np.ndarray  # (H, W) int32
    pix: np.ndarray  # flat column-major (COCO) pixel indices of all its predictions, grouped by prediction
    own: np.ndarray  # the prediction (0..n_pred-1, the image's file order) each pixel belongs to
    n_pred: int
    scores: np.ndarray  # (n_pred,)
    soft: np.ndarray  # (n_pred,), NaN: none
    complete: bool  # False: the label map annotates only some objects (partial truth)
    markers: Path | None  # TRA markers of the frame, when the dataset has them


def threads() -> int:
    """Worker processes: ``OBJGUIDED_THREADS``, else ``OMP_NUM_THREADS``, else the CPU count (1 = serial)."""
    for var in ("OBJGUIDED_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return os.cpu_count() or 1


def read_labels(path: Path) -> np.ndarray:
    """A label map, as :func:`objguided.data.canonical.read_label_map` reads it, faster for the common case:
    a PNG of one 8- or 16-bit channel (every canonical label map) is decoded by imagecodecs straight into an
    array (about twice as fast as Pillow, which copies through ``tobytes``) and kept in its unsigned type
    (ids are non-negative by type, so there is nothing to check). Anything else, a damaged file included, goes
    to ``read_label_map``, which reads it or names the problem."""
    if path.suffix.lower() == ".png":
        import imagecodecs

        try:
            labels = imagecodecs.png_decode(path.read_bytes())
        except Exception:  # noqa: BLE001 -- any failure: the canonical reader gives the DataError
            labels = None
        if labels is not None and labels.ndim == 2 and labels.dtype in (np.uint8, np.uint16):
            return labels
    return read_label_map(path)


def read_truth(gt, ids: set[str]) -> Truth:
    """Partial-truth facts of a canonical dataset's ``manifest.json`` for the scored ``ids`` (none: complete)."""
    path = Path(gt) / MANIFEST
    if not path.is_file():
        return Truth(frozenset(), {})
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); re-run `objguided convert` for this dataset") from exc
    complete = manifest.get("truth_complete", {}) if isinstance(manifest, dict) else {}
    markers = manifest.get("markers", {}) if isinstance(manifest, dict) else {}
    for key, value, kind in (("truth_complete", complete, bool), ("markers", markers, str)):
        if not isinstance(value, dict) or not all(type(v) is kind for v in value.values()):
            raise DataError(f"{path}: '{key}' must map image ids to {kind.__name__} values (see datasets/README.md, "
                            "'Partial truth'); re-run `objguided convert` for this dataset")
    partial = frozenset(i for i, ok in complete.items() if not ok and i in ids)
    return Truth(partial, {i: Path(gt) / rel for i, rel in markers.items() if i in ids})


def load(gt, pred_path, split_path=None, subset=None, min_score: float | None = None) -> Grouped:
    """Read and check a predictions file against the GT to score (records below ``min_score`` left out)."""
    sources = gt_sources(gt, split_path, subset)
    where = str(pred_path)
    records = load_json_list(pred_path)
    ids, counts, sizes, scores, soft = check_records(records, where)
    img = record_images(ids, sources, where, gt, subset)
    keep = np.arange(len(records)) if min_score is None else np.flatnonzero(scores >= min_score)
    perm = keep[np.argsort(img[keep], kind="stable")]
    bounds = np.searchsorted(img[perm], np.arange(len(sources) + 1))
    truth = read_truth(gt, {i for i, _ in sources})
    return Grouped(where, sources, len(records), ids, counts, sizes, scores, soft, perm, bounds, truth)


def _image(g: Grouped, k: int, runs, a0: int) -> ImageData:
    image_id, path = g.sources[k]
    labels = read_labels(Path(path))
    a, b = int(g.bounds[k]), int(g.bounds[k + 1])
    sel = g.perm[a:b]
    bad = np.flatnonzero((g.sizes[sel] != labels.shape).any(axis=1))
    if bad.size:
        j = int(sel[bad[0]])
        raise DataError(f"{g.where}: record {j}: image '{image_id}': RLE size {g.sizes[j, 0]}x{g.sizes[j, 1]} "
                        f"differs from its ground-truth label map {labels.shape[0]}x{labels.shape[1]} ({path})")
    first = runs.first[a - a0:b - a0 + 1]
    r0, r1 = int(first[0]), int(first[-1])
    pix, own = runs_to_pixels(runs.start[r0:r1], runs.length[r0:r1], np.repeat(np.arange(b - a), np.diff(first)))
    return ImageData(k, image_id, labels, pix, own, b - a, g.scores[sel], g.soft[sel],
                     image_id not in g.truth.partial, g.truth.markers.get(image_id))


def _chunk(g: Grouped, fn: Callable[[ImageData], T], k0: int, k1: int) -> list[T]:
    """Images k0..k1-1: parse their records' RLE at once, then ``fn`` on each image."""
    a0, b0 = int(g.bounds[k0]), int(g.bounds[k1])
    sel = g.perm[a0:b0]
    runs = parse_rle_counts([g.counts[i] for i in sel], g.sizes[sel], g.where, index_of=sel)
    check_nonempty(runs, [g.ids[i] for i in sel], g.where, index_of=sel)
    return [fn(_image(g, k, runs, a0)) for k in range(k0, k1)]


_JOBS: dict[int, Callable] = {}


def _run_job(args):
    token, lo, hi = args
    try:
        return _JOBS[token](lo, hi)
    except DataError as exc:  # returned, so that the parent raises the first error in image order
        return exc


def map_images(g: Grouped, fn: Callable[[ImageData], T]) -> list[T]:
    """``[fn(image) for image in g's images]``, in scoring order, on forked workers when it pays."""
    n = len(g.sources)
    workers = min(threads(), n // 8)
    if workers < 2 or "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        return _chunk(g, fn, 0, n)
    edges = np.linspace(0, n, 4 * workers + 1).round().astype(int)
    token = id(fn)
    _JOBS[token] = lambda lo, hi: _chunk(g, fn, lo, hi)
    gc.freeze()  # children's garbage collections then skip the inherited objects (no copy-on-write storm)
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            jobs = [(token, int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
            out = pool.map(_run_job, jobs, chunksize=1)
    finally:
        gc.unfreeze()
        del _JOBS[token]
    for r in out:
        if isinstance(r, DataError):
            raise r
    return [x for chunk in out for x in chunk]
