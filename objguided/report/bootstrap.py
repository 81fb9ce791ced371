"""Percentile bootstrap over test images for the pooled VOC AP (Table I and Table II intervals).

The AP of the paper is pooled over the test images, so its uncertainty from the choice of test images is
estimated by resampling *images* with replacement and pooling their predictions again. This works
without re-matching because the TP flags of a prediction depend on its own image only (matching is per
image, in descending score): ``score`` stores them per image in metrics.json (``per_image[k]``:
``pred_scores``, ``pred_tp_seg``, ``pred_tp_dec`` as bit masks over the ten thresholds, ``gt_kept``).

Conventions (fixed so that the interval is reproducible):

- ``B`` resamples (default 1000) of ``n`` image indices drawn uniformly with replacement from
  ``numpy.random.default_rng(seed)`` (default seed 0); the same draws for every row of a dataset and
  for every seed of a row (paired), so differences between rows and seeds are not resampling noise.
- A resample's pooled ranking: stable descending score, equal scores in original image order then file
  order (as ``score`` ranks), the copies of a prediction whose image is drawn twice adjacent; its recall
  denominator is the sum of the drawn images' ``gt_kept``. Resampling every image exactly once therefore
  reproduces the stored AP.
- With several seeds, the statistic of one resample is the mean over seeds of their resampled AP
  (the same image indices for every seed); the interval is the 2.5 and 97.5 percentiles (numpy's
  default linear interpolation) of the ``B`` statistics, in percent like the table.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from objguided.errors import DataError
from objguided.metrics import ap

#: Resamples, generator seed and coverage used unless the report spec says otherwise.
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
CRITERIA = ("seg", "dec")


class Matches(NamedTuple):
    """One scored run's per-prediction match data, pooled in image order (file order within an image)."""

    image_ids: list[str]
    image_of: np.ndarray  # (N,) image index of each prediction
    scores: np.ndarray  # (N,) float64
    tp: dict[str, np.ndarray]  # criterion -> (T, N) bool
    gt_kept: np.ndarray  # (n_images,) int64


def unpack_bits(bits: Sequence[int], n_thresholds: int) -> np.ndarray:
    """Bit masks (bit i = TP at threshold i) -> (T, N) bool flags.

    >>> unpack_bits([0b101, 0, 0b10], 3).astype(int).tolist()
    [[1, 0, 0], [0, 0, 1], [1, 0, 0]]
    """
    b = np.asarray(bits, np.int64).reshape(1, -1)
    return (np.right_shift(b, np.arange(n_thresholds, dtype=np.int64)[:, None]) & 1).astype(bool)


def matches_of(metrics: dict) -> Matches | None:
    """The per-prediction match data of a metrics dict, or None when it was scored before it was stored.

    Raises ``DataError`` when the data is there but inconsistent (lengths or counts disagree).
    """
    per_image = metrics.get("per_image")
    if not per_image or not all(isinstance(r, dict) and "pred_scores" in r for r in per_image):
        return None
    n_t = len(metrics["thresholds"])
    ids, image_of, scores, flags, kept = [], [], [], {c: [] for c in CRITERIA}, []
    for k, r in enumerate(per_image):
        s = np.asarray(r["pred_scores"], np.float64)
        if any(len(r[f"pred_tp_{c}"]) != s.size for c in CRITERIA) or s.size != r.get("predictions", s.size):
            raise DataError(f"per_image[{k}] ({r.get('image_id')}): pred_scores, pred_tp_seg, pred_tp_dec "
                            "and predictions disagree in length; re-run the score step")
        ids.append(str(r["image_id"]))
        image_of.append(np.full(s.size, k, np.int64))
        scores.append(s)
        for c in CRITERIA:
            flags[c].append(unpack_bits(r[f"pred_tp_{c}"], n_t))
        kept.append(int(r["gt_kept"]))
    return Matches(ids, np.concatenate(image_of), np.concatenate(scores),
                   {c: np.concatenate(flags[c], axis=1) for c in CRITERIA}, np.asarray(kept, np.int64))


class Ranked(NamedTuple):
    """A run's predictions in the pooled rank of the full test set, ready for fast resampling."""

    image_of: np.ndarray  # (N,) in rank order
    tp: dict[str, np.ndarray]  # criterion -> (T, N) in rank order
    gt_kept: np.ndarray


def rank_matches(m: Matches) -> Ranked:
    """Sort once: a resample's ranking is this order with each prediction repeated by its image's draw count."""
    order = ap.pooled_rank(m.scores)
    return Ranked(m.image_of[order], {c: t[:, order] for c, t in m.tp.items()}, m.gt_kept)


def resample_ap(r: Ranked, counts: np.ndarray, criterion: str) -> np.ndarray:
    """Pooled VOC AP per threshold of the resample that draws image k ``counts[k]`` times."""
    return resample_ap_batch(r, np.asarray(counts)[None, :], criterion)[0]


def resample_ap_batch(r: Ranked, counts: np.ndarray, criterion: str) -> np.ndarray:
    """(B, T) pooled VOC2010 all-point AP of B resamples at once; ``counts``: (B, n_images) draw counts.

    Instead of repeating each prediction by its image's draw count (what ``pooled_ap`` does, then
    ``ap.voc_ap``), each prediction is weighted by it: the cumulative TP and FP become weighted cumulative
    sums. This is exact, not an approximation: along the copies of a TP the precision only rises, so the
    interpolated precision (maximum to the right) of every copy is that of the last copy, and the copies'
    recall steps add up to one step of the weight; along the copies of an FP recall does not move and the
    precision only falls, so they change no maximum. AP = sum over ranks of (recall step) x (maximum
    precision from that rank on), with recall = TP / (drawn kept GT) and precision = TP / max(TP + FP, eps).
    Only the TP ranks enter the sum, and the maximum precision from a TP rank on is reached at a TP rank
    (precision falls along FPs), so each threshold only looks at its TP ranks; the cumulative count of
    drawn predictions (TP + FP) is shared by all thresholds.
    """
    counts = np.asarray(counts, np.int64)
    tp = r.tp[criterion]
    out = np.zeros((counts.shape[0], tp.shape[0]))
    n_gt = (counts @ r.gt_kept).astype(np.float64)
    if tp.shape[1] == 0:
        return out
    weight = counts[:, r.image_of].astype(np.float64)  # (B, N)
    drawn = np.cumsum(weight, axis=1)
    eps = np.finfo(np.float64).eps
    for t in range(tp.shape[0]):
        pos = np.flatnonzero(tp[t])
        if pos.size == 0:
            continue
        step = weight[:, pos]
        prec = np.cumsum(step, axis=1) / np.maximum(drawn[:, pos], eps)
        best = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
        out[:, t] = np.where(n_gt > 0, (step * best).sum(axis=1) / np.maximum(n_gt, 1.0), 0.0)
    return out


def pooled_ap(m: Matches, indices: Sequence[int], criterion: str) -> np.ndarray:
    """Reference path: pool the drawn images' predictions (each image as often as drawn) and rank them
    again with ap.py, then ``ap.voc_ap``. Used by the tests to check ``resample_ap``.
    """
    counts = np.bincount(np.asarray(indices, np.int64), minlength=len(m.image_ids))
    sel = np.repeat(np.arange(m.scores.size), counts[m.image_of])  # original order, copies adjacent
    rank = ap.pooled_rank(m.scores[sel])
    return ap.voc_ap(m.tp[criterion][:, sel[rank]], int(counts @ m.gt_kept))


def draws(n_images: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(B, n_images) draw counts: resample b draws image k ``out[b, k]`` times (each row sums to n).

    >>> c = draws(5, 3, seed=1); c.shape, c.sum(axis=1).tolist()
    ((3, 5), [5, 5, 5])
    """
    idx = np.random.default_rng(seed).integers(0, n_images, size=(resamples, n_images))
    if n_images == 0:
        return np.zeros((resamples, 0), np.int64)
    return np.stack([np.bincount(row, minlength=n_images) for row in idx])


#: The statistics the intervals are given for: (criterion, which thresholds are averaged).
STATISTICS = {"ap_seg": ("seg", slice(None)), "ap_dec": ("dec", slice(None)),
              "ap_seg_50": ("seg", slice(0, 1)), "ap_seg_75": ("seg", slice(5, 6))}


#: Resamples evaluated together (bounds the (batch, predictions) work arrays).
BATCH = 64


def resampled_statistics(seeds: list[Matches], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per statistic (``STATISTICS``), the (B,) seed-mean of the resampled AP, in percent."""
    ids = seeds[0].image_ids
    for m in seeds[1:]:
        if m.image_ids != ids:
            raise DataError("seeds of one row were scored on different test images; no paired bootstrap")
    ranked = [rank_matches(m) for m in seeds]
    per_seed = {c: np.stack([np.concatenate([resample_ap_batch(r, counts[i:i + BATCH], c)
                                             for i in range(0, len(counts), BATCH)])
                             for r in ranked])
                for c in CRITERIA}  # criterion -> (seeds, B, T)
    out = {}
    for name, (criterion, cols) in STATISTICS.items():
        out[name] = 100.0 * per_seed[criterion][:, :, cols].mean(axis=2).mean(axis=0)
    return out


def intervals(seeds: list[Matches], resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
              level: float = DEFAULT_LEVEL) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval (percent) of each statistic of ``STATISTICS`` over the test images.

    ``seeds``: the match data of every seed of one table row (same test images, paired resampling).
    """
    if not seeds:
        raise DataError("bootstrap: no runs")
    counts = draws(len(seeds[0].image_ids), resamples, seed)
    stats = resampled_statistics(seeds, counts)
    q = 100.0 * np.array([(1 - level) / 2, 1 - (1 - level) / 2])
    return {name: tuple(float(v) for v in np.percentile(s, q)) for name, s in stats.items()}
