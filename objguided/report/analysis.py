"""What the figures need from a run's per-image match data (metrics.json ``per_image``, see ``bootstrap``):
each test image's own AP, and the method's operating point (the score threshold at which it is drawn).

Operating point: the score threshold that maximises F1 at IoU 0.5 (masks) over the evaluated images, ties
to the higher threshold. ``objguided predict`` writes predictions of the evaluated subset only, so the
threshold is chosen on those images: it decides what Figure 4 and the error figure *draw*, never a number
of the tables (AP ranks all predictions and needs no threshold).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from objguided.report import bootstrap as bs

#: IoU threshold of the operating point's F1 (index 0 of the paper's 0.50:0.05:0.95 grid)
F1_IOU_INDEX = 0


class OperatingPoint(NamedTuple):
    threshold: float  # draw predictions with score >= threshold; inf when nothing is worth drawing
    f1: float
    tp: int
    fp: int
    fn: int


def operating_point(m: bs.Matches) -> OperatingPoint:
    """The F1-maximising score threshold at IoU 0.5 over all images of ``m``.

    >>> m = bs.Matches(["a"], np.array([0, 0, 0]), np.array([0.9, 0.6, 0.3]),
    ...                {"seg": np.array([[1, 0, 1]], bool), "dec": np.array([[1, 0, 1]], bool)}, np.array([2]))
    >>> operating_point(m)
    OperatingPoint(threshold=0.3, f1=0.8, tp=2, fp=1, fn=0)
    """
    n_gt = int(m.gt_kept.sum())
    if m.scores.size == 0:
        return OperatingPoint(float("inf"), 0.0, 0, 0, n_gt)
    order = np.argsort(-m.scores, kind="stable")
    scores, tp = m.scores[order], m.tp["seg"][F1_IOU_INDEX, order]
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    last = np.r_[scores[1:] != scores[:-1], True]  # a threshold keeps every prediction of equal score
    ctp, cfp, scores = ctp[last], cfp[last], scores[last]
    f1 = 2 * ctp / np.maximum(ctp + cfp + n_gt, 1)
    best = int(np.flatnonzero(f1 == f1.max())[0])  # the highest threshold among equals
    if f1[best] == 0:
        return OperatingPoint(float("inf"), 0.0, 0, 0, n_gt)
    return OperatingPoint(float(scores[best]), float(f1[best]), int(ctp[best]), int(cfp[best]),
                          n_gt - int(ctp[best]))


def image_aps(m: bs.Matches) -> np.ndarray:
    """Each image's own APseg (fraction, mean over the IoU thresholds), in ``m.image_ids`` order.

    >>> m = bs.Matches(["a", "b"], np.array([0, 1]), np.array([0.9, 0.8]),
    ...                {"seg": np.array([[1, 0]], bool), "dec": np.array([[1, 0]], bool)}, np.array([1, 1]))
    >>> image_aps(m).tolist()
    [1.0, 0.0]
    """
    ranked = bs.rank_matches(m)
    counts = np.eye(len(m.image_ids), dtype=np.int64)
    return bs.resample_ap_batch(ranked, counts, "seg").mean(axis=1) if len(counts) else np.zeros(0)
