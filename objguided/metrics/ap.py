"""The paper's AP protocol (docs/protocol.md) as pure functions over arrays.

Nothing here reads files. The pieces, in the order the evaluator uses them:

1. :func:`overlaps` -- one pass over one image: GT ids (ascending), GT and prediction tight boxes,
   pixel areas, and the prediction x GT intersection matrix (a ``bincount`` over the predicted pixels;
   predictions may overlap each other).
2. :func:`best_matches` -- for every prediction, its one candidate GT object and that IoU, for masks
   (highest mask IoU among kept GT whose box meets the prediction's box with positive area) and for
   boxes (highest box IoU among all kept GT). The first object wins ties (GT order = ascending id).
   The candidate does not depend on the threshold, because the protocol never falls back to the
   second best: this is what lets ten thresholds share one IoU computation.
3. :func:`match` -- per threshold, a prediction is a TP when its IoU passes the criterion
   (``CRITERIA``: ``"seg"`` is ``iou > t``, ``"dec"`` is ``iou >= t``) and no earlier prediction (in
   descending score, stable) already took the same object with a passing IoU.
4. :func:`voc_ap` -- pooled cumulative TP/FP and the VOC2010 all-point AP.

:func:`evaluate` strings these together for label maps and boolean masks held in memory; it is what the
hand-worked examples below use, and the file-level evaluator (:mod:`objguided.metrics.score`) calls the
same functions.

Hand-worked examples (``evaluate`` returns TP flags per threshold in pooled rank order):

A 4x4 GT square and a prediction covering its top two rows: mask IoU 8/16 = 0.5 exactly, which is
*not* a TP at 0.50 under the strict ``>``; its box IoU is 3/9 (inclusive boxes, no +1):

>>> gt = np.zeros((6, 6), np.int32); gt[0:4, 0:4] = 1
>>> p = np.zeros((6, 6), bool); p[0:2, 0:4] = True
>>> r = evaluate([gt], [[p]], [[0.9]])
>>> r["iou_seg"][0], r["iou_dec"][0]
(0.5, 0.3333333333333333)
>>> r["tp_seg"][0].tolist(), r["ap_seg"][0]
([False], 0.0)

A 5x5 GT square and a prediction on its top three rows: inclusive boxes [0,0,4,4] (area 16) and
[0,0,4,2] (area 8), box IoU 8/16 = 0.5 exactly, which *is* a TP at 0.50 for APdec (``>=``), and not at 0.55:

>>> gt = np.zeros((6, 6), np.int32); gt[0:5, 0:5] = 1
>>> p = np.zeros((6, 6), bool); p[0:3, 0:5] = True
>>> r = evaluate([gt], [[p]], [[0.9]])
>>> r["iou_dec"][0], r["ap_dec"][:2]
(0.5, [1.0, 0.0])

Mask IoU 18/20 = 0.9 exactly is a TP at the ninth threshold (0.8999999999999999), not at the tenth:

>>> gt = np.zeros((6, 6), np.int32); gt[0:4, 0:5] = 1
>>> p = gt > 0; p[3, 3:5] = False
>>> r = evaluate([gt], [[p]], [[0.9]])
>>> r["iou_seg"][0], float(DEFAULT_THRESHOLDS[8]), r["ap_seg"][8:]
(0.9, 0.8999999999999999, [1.0, 0.0])

A GT object 2 px wide (max col - min col = 1) is dropped before anything else: it is not in the recall
denominator, and a prediction exactly on it is a false positive:

>>> gt = np.zeros((10, 10), np.int32); gt[0:10, 4:6] = 1
>>> r = evaluate([gt], [[gt == 1]], [[0.9]])
>>> r["gt_kept"], r["gt_dropped"], bool(r["tp_seg"][:, 0].any()), r["ap_seg"][0]
(0, 1, False, 0.0)

A duplicate prediction (same mask, lower score) finds its object already taken: it is a FP, with no
fall-back to another object:

>>> gt = np.zeros((8, 8), np.int32); gt[0:4, 0:4] = 1; gt[4:8, 4:8] = 2
>>> r = evaluate([gt], [[gt == 1, gt == 1]], [[0.9, 0.8]])
>>> r["tp_seg"][0].tolist(), r["tp_dec"][0].tolist()
([True, False], [True, False])

An extra false positive ranked after all the TPs leaves AP unchanged (recall does not move); one
ranked before them lowers it. With three GT objects:

>>> voc_ap(np.array([[1, 0, 1]], bool), 3).tolist()
[0.5555555555555556]
>>> voc_ap(np.array([[1, 0, 1, 0]], bool), 3).tolist()
[0.5555555555555556]
>>> voc_ap(np.array([[0, 1, 0, 1]], bool), 3).tolist()
[0.3333333333333333]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

#: numpy's ``linspace(0.5, 0.95, 10)``, bit for bit (the ninth is 0.8999999999999999)
DEFAULT_THRESHOLDS = np.linspace(0.5, 0.95, 10)

#: what a prediction's IoU must do to pass threshold ``t``: masks strictly above, boxes at or above
CRITERIA: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "seg": lambda iou, t: iou > t,
    "dec": lambda iou, t: iou >= t,
}

#: pycocotools' recall thresholds of its 101-point interpolation: ``linspace(0, 1, 101)``
COCO_RECALL = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)

#: box conventions: what is added to the inclusive (x2, y2) of a tight box before areas are taken
BOX_CONVENTIONS: dict[str, int] = {
    "inclusive": 0,  # the paper's: x2 = max column, y2 = max row, area (x2-x1)*(y2-y1), no +1
    "pixel_extent": 1,  # [x1, y1, x2+1, y2+1]: the pixel edges (COCO's geometry)
}

#: mask IoU definitions: the union's prediction term
MASK_IOU = ("binary", "soft_area")

GT_DROP_RULE = "GT objects with max row - min row <= 1 or max col - min col <= 1 are dropped (not matched, not counted)"
MATCH_RULE = ("per image, predictions in stable descending score take the single best kept GT object "
              "(masks: highest mask IoU among objects whose box meets the prediction's box with positive "
              "area; boxes: highest box IoU among all kept objects; first object in ascending label id "
              "on ties); already taken or failing the threshold -> FP, no fall-back")


class Overlaps(NamedTuple):
    """One image: GT ids (ascending), areas, inclusive tight boxes [x1, y1, x2, y2], and intersections."""

    gt_ids: np.ndarray  # (G,) int
    gt_area: np.ndarray  # (G,) int64
    gt_boxes: np.ndarray  # (G, 4) int64, inclusive
    pred_area: np.ndarray  # (P,) int64
    pred_boxes: np.ndarray  # (P, 4) int64, inclusive
    inter: np.ndarray  # (P, G) int64: |pred & gt|


class Best(NamedTuple):
    """Per prediction: index of its one candidate GT object (-1: none) and the IoU with it (-inf: none)."""

    index: np.ndarray
    iou: np.ndarray


def label_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids present in a label map (ascending), their pixel areas and inclusive tight boxes.

    >>> lab = np.array([[0, 3, 3], [0, 0, 3], [1, 0, 0]])
    >>> ids, area, boxes = label_boxes(lab)
    >>> ids.tolist(), area.tolist(), boxes.tolist()
    ([1, 3], [1, 3], [[0, 2, 0, 2], [1, 0, 2, 1]])
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    flat = labels.ravel()
    # runs of equal value in row-major order: one pass over the pixels, then work per run
    heads = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], heads))
    stops = np.concatenate((heads, [flat.size])) - 1  # inclusive
    lab = flat[starts]
    keep = np.flatnonzero(lab > 0)
    if keep.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.int64)
    lab, starts, stops = lab[keep], starts[keep], stops[keep]
    area = np.bincount(lab, weights=stops - starts + 1).astype(np.int64)  # exact below 2**53
    ids = np.flatnonzero(area)
    rs, cs = np.divmod(starts, w)
    re, ce = np.divmod(stops, w)
    wraps = rs != re  # a run over a row end covers the last column and the first
    big = np.iinfo(np.int64).max
    x1, y1 = np.full(area.size, big), np.full(area.size, big)
    x2, y2 = np.full(area.size, -1), np.full(area.size, -1)
    np.minimum.at(x1, lab, np.where(wraps, 0, cs))
    np.maximum.at(x2, lab, np.where(wraps, w - 1, ce))
    np.minimum.at(y1, lab, rs)
    np.maximum.at(y2, lab, re)
    boxes = np.stack([x1[ids], y1[ids], x2[ids], y2[ids]], axis=1)
    return ids.astype(np.int64), area[ids], boxes


def kept_gt(boxes: np.ndarray) -> np.ndarray:
    """The drop rule on inclusive boxes: keep objects more than 2 px high and wide.

    >>> kept_gt(np.array([[0, 0, 1, 9], [0, 0, 2, 2], [3, 3, 9, 4]])).tolist()
    [False, True, False]
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    return ((boxes[:, 2] - boxes[:, 0]) > 1) & ((boxes[:, 3] - boxes[:, 1]) > 1)


def convert_boxes(boxes: np.ndarray, convention: str = "inclusive") -> np.ndarray:
    """Inclusive tight boxes in the named convention (``BOX_CONVENTIONS``)."""
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"box_convention {convention!r} unknown; expected one of {sorted(BOX_CONVENTIONS)}")
    out = np.array(boxes, np.int64).reshape(-1, 4)
    out[:, 2:] += BOX_CONVENTIONS[convention]
    return out


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas of boxes [x1, y1, x2, y2] (already in their convention), no +1.

    >>> box_intersection(np.array([[0, 0, 4, 2]]), np.array([[0, 0, 4, 4], [4, 0, 9, 9]])).tolist()
    [[8, 0]]
    """
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.maximum(w, 0) * np.maximum(h, 0)


def box_iou(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise box IoU and intersection (boxes already in their convention); 0 where the union is 0.

    >>> iou, inter = box_iou(np.array([[0, 0, 4, 2]]), np.array([[0, 0, 4, 4]]))
    >>> iou.tolist(), inter.tolist()
    ([[0.5]], [[8]])
    """
    inter = box_intersection(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return iou, inter


def masks_to_pixels(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean HxW masks -> (flat C-order pixel indices, owner index per pixel), grouped by owner."""
    parts = [np.flatnonzero(np.asarray(m, bool)) for m in masks]
    if any(p.size == 0 for p in parts):
        raise ValueError("empty prediction mask")
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(parts)), [p.size for p in parts])
    return np.concatenate(parts).astype(np.int64), owner


def overlaps(labels: np.ndarray, pix: np.ndarray, owner: np.ndarray, n_pred: int, *, order: str = "C") -> Overlaps:
    """Everything the matching needs from one image, in one pass over the predicted pixels.

    ``pix`` are flat indices of predicted pixels in the label map flattened in ``order`` ("C" row-major or
    "F" column-major, as COCO RLE), ``owner`` the prediction each belongs to: non-decreasing, every
    prediction in ``range(n_pred)`` with at least one pixel. Predictions may overlap.

    >>> lab = np.array([[1, 1, 0], [1, 1, 2], [0, 2, 2]])
    >>> pix, owner = masks_to_pixels([lab == 1, lab > 0])
    >>> o = overlaps(lab, pix, owner, 2)
    >>> o.inter.tolist(), o.pred_area.tolist(), o.pred_boxes.tolist()
    ([[4, 0], [4, 3]], [4, 7], [[0, 0, 1, 1], [0, 0, 2, 2]])
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    gt_ids, gt_area, gt_boxes = label_boxes(labels)
    pix = np.asarray(pix, np.int64)
    owner = np.asarray(owner, np.int64)
    g = gt_ids.size
    if n_pred == 0:
        return Overlaps(gt_ids, gt_area, gt_boxes, np.zeros(0, np.int64), np.zeros((0, 4), np.int64),
                        np.zeros((0, g), np.int64))
    if order == "C":
        rows, cols = np.divmod(pix, w)
        cpix = pix
    elif order == "F":
        cols, rows = np.divmod(pix, h)
        cpix = rows * w + cols
    else:
        raise ValueError(f"order {order!r}: expected 'C' or 'F'")
    lut = np.zeros(int(gt_ids[-1]) + 1 if g else 1, np.int64)
    lut[gt_ids] = np.arange(1, g + 1)
    col = lut[labels.ravel()[cpix]]
    inter = np.bincount(owner * (g + 1) + col, minlength=n_pred * (g + 1)).reshape(n_pred, g + 1)
    pred_area = inter.sum(axis=1)
    starts = np.concatenate(([0], np.cumsum(pred_area)[:-1]))
    pred_boxes = np.stack([np.minimum.reduceat(cols, starts), np.minimum.reduceat(rows, starts),
                           np.maximum.reduceat(cols, starts), np.maximum.reduceat(rows, starts)], axis=1)
    return Overlaps(gt_ids, gt_area, gt_boxes, pred_area, pred_boxes.astype(np.int64), inter[:, 1:])


def mask_iou(inter: np.ndarray, pred_area: np.ndarray, gt_area: np.ndarray,
             soft_area: np.ndarray | None = None) -> np.ndarray:
    """Mask IoU matrix. Where ``soft_area`` is given (finite), it replaces the prediction's pixel count in
    the union: ``|support & gt| / (soft_area + |gt| - |support & gt|)`` (the authors' soft IoU).

    >>> mask_iou(np.array([[8]]), np.array([10]), np.array([16]), np.array([7.5])).tolist()  # 8 / 15.5
    [[0.5161290322580645]]
    """
    p = np.asarray(pred_area, np.float64)
    if soft_area is not None:
        soft = np.asarray(soft_area, np.float64)
        p = np.where(np.isfinite(soft), soft, p)
    union = (p[:, None] + np.asarray(gt_area, np.float64)[None, :]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _argbest(iou: np.ndarray, allowed: np.ndarray) -> Best:
    p = iou.shape[0]
    if iou.shape[1] == 0:
        return Best(np.full(p, -1, np.int64), np.full(p, -np.inf))
    masked = np.where(allowed, iou, -np.inf)
    index = np.argmax(masked, axis=1)  # first maximum on ties
    best = masked[np.arange(p), index]
    index = np.where(np.isfinite(best), index, -1)
    return Best(index.astype(np.int64), best)


def best_matches(o: Overlaps, *, box_convention: str = "inclusive", mask_iou_mode: str = "binary",
                 soft_area: np.ndarray | None = None) -> tuple[Best, Best, np.ndarray]:
    """The one candidate of every prediction, for masks and for boxes; and the kept-GT flags.

    Returns ``(seg, dec, kept)``; indices refer to the columns of ``o`` (all GT, dropped included, which are
    never candidates).
    """
    m = match_image(o, np.zeros(o.pred_area.size), box_convention=box_convention, mask_iou_mode=mask_iou_mode,
                    soft_area=soft_area, extras=False)
    return m.seg, m.dec, m.kept


@dataclass(frozen=True)
class ImageMatch:
    """Everything one image contributes to the pooled measures, all from one IoU computation.

    Indices are local to the image (columns of its :class:`Overlaps`); arrays over predictions are in the
    image's prediction order. ``coco_tp`` / ``dsb_tp`` are None when the extras were not asked for.
    """

    seg: Best  # the paper's mask candidate per prediction
    dec: Best  # the paper's box candidate per prediction
    kept: np.ndarray  # (G,) bool: GT objects the drop rule keeps
    coco_tp: np.ndarray | None = None  # (T, P) bool: COCO's per-image greedy matching, per threshold
    dsb_tp: np.ndarray | None = None  # (T,) int: GT objects matched at binary mask IoU > t (2018 DSB)

    @property
    def n_gt(self) -> int:
        return int(self.kept.size)


def match_image(o: Overlaps, scores: np.ndarray, *, box_convention: str = "inclusive",
                mask_iou_mode: str = "binary", soft_area: np.ndarray | None = None,
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS, extras: bool = True) -> ImageMatch:
    """The paper's candidates of one image and, with ``extras``, COCO's and the DSB's matches, from one
    binary mask IoU matrix (``scores``: the image's prediction scores, for COCO's per-image order)."""
    if mask_iou_mode not in MASK_IOU:
        raise ValueError(f"mask_iou {mask_iou_mode!r} unknown; expected one of {list(MASK_IOU)}")
    kept = kept_gt(o.gt_boxes)
    biou, binter = box_iou(convert_boxes(o.pred_boxes, box_convention), convert_boxes(o.gt_boxes, box_convention))
    binary = mask_iou(o.inter, o.pred_area, o.gt_area)
    miou = binary if mask_iou_mode == "binary" else mask_iou(o.inter, o.pred_area, o.gt_area, soft_area)
    seg = _argbest(miou, kept[None, :] & (binter > 0))
    dec = _argbest(biou, np.broadcast_to(kept[None, :], biou.shape))
    if not extras:
        return ImageMatch(seg, dec, kept)
    return ImageMatch(seg, dec, kept, coco_image_tp(binary, scores, thresholds), dsb_counts(o, thresholds, binary))


def coco_image_tp(iou: np.ndarray, scores: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """pycocotools' ``evaluateImg`` on one image (one category, area 'all', no crowd, no detection cap): TP
    flags (T, P) in the image's prediction order.

    Predictions in stable descending score each take, per threshold, the not yet taken GT object of highest
    IoU with ``iou >= min(t, 1 - 1e-10)``, the *last* such object on ties (COCO's loop replaces its best on
    ``>=``), falling back to the next best when the best is taken. With disjoint GT objects a prediction can
    reach IoU >= 0.5 with two objects only when it covers exactly two halves (IoU 0.5 with both), so below
    that exact tie the candidate is unique and the matching is the paper's first-come rule; only images
    holding such a tie run COCO's loop as written.

    >>> iou = np.array([[0.5, 0.5], [0.0, 0.9]])  # prediction 0 covers two halves, ranks first: takes object 1
    >>> coco_image_tp(iou, np.array([0.9, 0.8]), [0.5, 0.55]).astype(int).tolist()  # so 1 finds it taken
    [[1, 0], [0, 1]]
    >>> coco_image_tp(iou, np.array([0.8, 0.9]), [0.5]).astype(int).tolist()  # falls back to object 0
    [[1, 1]]
    """
    thr = np.minimum(np.asarray(thresholds, np.float64), 1 - 1e-10)
    p, g = iou.shape
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    tp = np.zeros((thr.size, p), bool)
    if p == 0 or g == 0:
        return tp
    if ((iou >= thr.min()).sum(axis=1) > 1).any():
        return _coco_greedy(iou, order, thr)
    best = g - 1 - np.argmax(iou[:, ::-1], axis=1)  # the last maximum
    tp[:, order] = match(Best(best, iou[np.arange(p), best]), order, thr, "dec")
    return tp


def _coco_greedy(iou: np.ndarray, order: np.ndarray, thr: np.ndarray) -> np.ndarray:
    tp = np.zeros((thr.size, iou.shape[0]), bool)
    for i, t in enumerate(thr):
        taken = np.zeros(iou.shape[1], bool)
        for d in order:
            cand = np.flatnonzero((iou[d] >= t) & ~taken)[::-1]  # last first: argmax then keeps the last
            if cand.size:
                taken[cand[np.argmax(iou[d, cand])]] = True
                tp[i, d] = True
    return tp


def coco_ap(tp: np.ndarray, n_gt: int) -> float | None:
    """pycocotools' ``accumulate`` + ``summarize`` AP@[.5:.95] from pooled TP flags (T, N) in rank order
    (stable descending score over all images, as its mergesort): 101-point interpolated precision, averaged
    over thresholds and recall points. None without GT objects (COCO's -1); 0.0 without predictions.

    >>> coco_ap(np.array([[True, False, True]]), 2)  # precision 1 up to recall 0.5, then 2/3 up to 1
    0.834983498349835
    """
    tp = np.atleast_2d(np.asarray(tp, bool))
    if n_gt <= 0:
        return None
    if tp.shape[1] == 0:
        return 0.0
    ctp = np.cumsum(tp, axis=1, dtype=np.float64)
    cfp = np.cumsum(~tp, axis=1, dtype=np.float64)
    rc = ctp / n_gt
    pr = np.maximum.accumulate((ctp / (cfp + ctp + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
    q = np.zeros((tp.shape[0], COCO_RECALL.size))
    for r in range(tp.shape[0]):
        at = np.searchsorted(rc[r], COCO_RECALL, side="left")
        ok = at < tp.shape[1]
        q[r, ok] = pr[r, at[ok]]
    return float(np.mean(q))


def match(best: Best, rank: np.ndarray, thresholds: Sequence[float], criterion: str,
          key: np.ndarray | None = None) -> np.ndarray:
    """TP flags (T, N) in rank order: IoU passes ``CRITERIA[criterion]`` and the object is not yet taken.

    ``rank`` orders the predictions (pooled stable descending score); ``key`` identifies objects across
    images (defaults to ``best.index``, i.e. one image).

    >>> b = Best(np.array([0, 0, 1]), np.array([0.7, 0.9, 0.5]))
    >>> match(b, np.array([0, 1, 2]), [0.5, 0.8], "seg").astype(int).tolist()
    [[1, 0, 0], [0, 1, 0]]
    """
    key = best.index if key is None else key
    k = np.asarray(key)[rank]
    tp = np.zeros((len(thresholds), len(rank)), bool)
    cand = np.flatnonzero(np.asarray(best.index)[rank] >= 0)
    if cand.size == 0:
        return tp
    # all thresholds at once: candidates grouped by object, rank order within; in each group the first
    # prediction that passes takes the object (the cumulative count of passes in its group is 1)
    cand = cand[np.lexsort((cand, k[cand]))]
    passed = CRITERIA[criterion](np.asarray(best.iou)[rank][cand][None, :],
                                 np.asarray(thresholds, np.float64)[:, None])
    head = np.concatenate(([True], k[cand][1:] != k[cand][:-1]))
    start = np.maximum.accumulate(np.where(head, np.arange(cand.size), 0))
    count = np.cumsum(passed, axis=1)
    tp[:, cand] = passed & (count - count[:, start] + passed[:, start] == 1)
    return tp


def voc_ap(tp: np.ndarray, n_gt: int) -> np.ndarray:
    """VOC2010 all-point AP for each row of ranked TP flags (T, N); 0 with no predictions or no GT.

    recall = TP / n_gt, precision = TP / max(TP + FP, eps), sentinels (0, 0) and (1, 0), precision made
    non-increasing from the right, summed over the points where recall changes.
    """
    tp = np.atleast_2d(np.asarray(tp, bool))
    out = np.zeros(tp.shape[0])
    if tp.shape[1] == 0 or n_gt <= 0:
        return out
    ctp = np.cumsum(tp, axis=1, dtype=np.float64)
    cfp = np.cumsum(~tp, axis=1, dtype=np.float64)
    rec = ctp / n_gt
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    ones = np.ones((tp.shape[0], 1))
    mrec = np.hstack([0 * ones, rec, ones])
    mpre = np.hstack([0 * ones, prec, 0 * ones])
    mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
    for r in range(tp.shape[0]):
        i = np.flatnonzero(mrec[r, 1:] != mrec[r, :-1])
        out[r] = np.sum((mrec[r, i + 1] - mrec[r, i]) * mpre[r, i + 1])
    return out


def pooled_rank(scores: np.ndarray) -> np.ndarray:
    """Stable descending-score order: ties keep input order (image order, then order within the image)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def dsb_counts(o: Overlaps, thresholds: Sequence[float], iou: np.ndarray | None = None) -> np.ndarray:
    """2018 DSB TP per threshold for one image: GT objects (all, none dropped) matched by a prediction of
    binary mask IoU > t. For t >= 0.5 and disjoint GT every prediction passes for at most one object, so
    this is the one-to-one matching; extra predictions on a matched object are FP. ``iou``: the binary mask
    IoU matrix of ``o`` when already computed."""
    iou = mask_iou(o.inter, o.pred_area, o.gt_area) if iou is None else iou
    return np.array([int((iou > t).any(axis=0).sum()) for t in thresholds], np.int64)


def dsb_image_score(tp: np.ndarray, n_pred: int, n_gt: int) -> float:
    """Mean over thresholds of TP / (TP + FP + FN); 1.0 for an image with no GT and no prediction."""
    if n_pred == 0 and n_gt == 0:
        return 1.0
    tp = np.asarray(tp, np.float64)
    return float(np.mean(tp / (n_pred + n_gt - tp)))


@dataclass(frozen=True)
class Pooled:
    """The set-level result of :func:`pool`: ranked TP flags (T, N) and APs; COCO AP None without extras."""

    rank: np.ndarray
    tp_seg: np.ndarray
    tp_dec: np.ndarray
    ap_seg: np.ndarray
    ap_dec: np.ndarray
    gt_kept: int
    gt_all: int
    coco_ap: float | None = None


def pool(images: Sequence[ImageMatch], scores: np.ndarray,
         thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> Pooled:
    """Pool per-image matches: one stable descending-score ranking over all predictions (``scores``: grouped
    by image in ``images`` order, each image's in its own order), objects told apart across images by an
    offset, then the paper's VOC AP for both criteria and, when every image has them, COCO's AP."""
    n_gt = np.array([m.n_gt for m in images], np.int64)
    n_pred = np.array([m.seg.index.size for m in images], np.int64)
    base = np.repeat(np.concatenate(([0], np.cumsum(n_gt)[:-1])), n_pred).astype(np.int64)

    def joined(pick) -> Best:
        idx = np.concatenate([pick(m).index for m in images]).astype(np.int64) if images else np.zeros(0, np.int64)
        iou = np.concatenate([pick(m).iou for m in images]).astype(float) if images else np.zeros(0)
        return Best(np.where(idx >= 0, idx + base, -1), iou)

    rank = pooled_rank(scores)
    tp_seg = match(joined(lambda m: m.seg), rank, thresholds, "seg")
    tp_dec = match(joined(lambda m: m.dec), rank, thresholds, "dec")
    n_kept = int(sum(int(m.kept.sum()) for m in images))
    coco = None
    if images and all(m.coco_tp is not None for m in images):
        coco = coco_ap(np.concatenate([m.coco_tp for m in images], axis=1)[:, rank], int(n_gt.sum()))
    return Pooled(rank, tp_seg, tp_dec, voc_ap(tp_seg, n_kept), voc_ap(tp_dec, n_kept), n_kept, int(n_gt.sum()),
                  coco)


def evaluate(gt_labels: Sequence[np.ndarray], pred_masks: Sequence[Sequence[np.ndarray]],
             pred_scores: Sequence[Sequence[float]], *, soft_areas: Sequence[Sequence[float | None]] | None = None,
             box_convention: str = "inclusive", mask_iou_mode: str = "binary",
             thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """The whole protocol on in-memory label maps and boolean masks (one list of masks per image).

    Returns ``ap_seg``/``ap_dec`` (lists), ranked ``tp_seg``/``tp_dec`` (T, N), the pooled ``rank``, the
    candidate IoUs ``iou_seg``/``iou_dec`` per prediction (input order), ``gt_kept``, ``gt_dropped`` and
    ``coco_ap`` (COCO mask AP@[.5:.95] of the same matches, :func:`coco_ap`).
    """
    images, scores = [], []
    for i, (labels, masks) in enumerate(zip(gt_labels, pred_masks)):
        pix, owner = masks_to_pixels(masks)
        o = overlaps(labels, pix, owner, len(masks))
        soft = None
        if soft_areas is not None:
            soft = np.array([np.nan if s is None else s for s in soft_areas[i]], np.float64)
        sc = np.asarray(pred_scores[i], np.float64).reshape(-1)
        images.append(match_image(o, sc, box_convention=box_convention, mask_iou_mode=mask_iou_mode,
                                  soft_area=soft, thresholds=thresholds))
        scores.append(sc)
    p = pool(images, np.concatenate(scores) if scores else np.zeros(0), thresholds)
    cat = lambda xs: np.concatenate(xs).astype(float) if xs else np.zeros(0)  # noqa: E731
    return {"ap_seg": p.ap_seg.tolist(), "ap_dec": p.ap_dec.tolist(), "tp_seg": p.tp_seg, "tp_dec": p.tp_dec,
            "rank": p.rank, "iou_seg": cat([m.seg.iou for m in images]).tolist(),
            "iou_dec": cat([m.dec.iou for m in images]).tolist(), "gt_kept": p.gt_kept,
            "gt_dropped": p.gt_all - p.gt_kept, "coco_ap": p.coco_ap}
