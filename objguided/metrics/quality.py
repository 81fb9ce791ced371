"""Benchmark quality measures of the paper's Tables III and IV, over integer label maps.

Two benchmarks, each with its own official definitions (followed here as written below; every deviation
is named):

**Cell Tracking Challenge (Table III): SEG, DET, OP_CSB.** Sources: the challenge's evaluation methodology
page (https://celltrackingchallenge.net/evaluation-methodology/) with its SEG.pdf, and Matula et al.,
"Cell Tracking Accuracy Measurement Based on Comparison of Acyclic Oriented Graphs", PLoS ONE 10(12):
e0144959, 2015 (AOGM), as used in Ulman et al., Nature Methods 14:1141-1152, 2017.

- A reference (GT) object R is *matched* by a predicted object S iff ``|R ∩ S| > 0.5 |R|`` (strict). With
  non-overlapping predictions each R has at most one match; one S may match several R.
- SEG: the Jaccard index ``|R ∩ S| / |R ∪ S|`` of each reference object with its match, 0 when it has none;
  SEG is the mean over *all reference objects of the sequence* (pooled, not a mean of per-frame means).
  Predicted objects that match nothing do not lower SEG (SEG is a reference-side measure).
- DET = ``1 - min(AOGM-D, AOGM-D_0) / AOGM-D_0`` with ``AOGM-D = w_NS NS + w_FN FN + w_FP FP``, the CTC
  weights ``w_NS = 5, w_FN = 10, w_FP = 1`` (:data:`CTC_WEIGHTS`), and ``AOGM-D_0 = w_FN * (number of
  reference objects)``, the cost of creating every reference detection from nothing (the AOGM-D of an empty
  result). FN: reference objects matched by no predicted object. FP: predicted objects matching no
  reference object. NS (vertex splitting): a predicted object matching k > 1 reference objects needs k - 1
  splits; NS is the sum of those. The sums and the ``min`` run over the whole sequence (all scored images).
- OP_CSB = (SEG + DET) / 2 (the challenge's overall performance for the segmentation benchmark).

Deviations, all forced by the harness's setting: (1) images are independent 2-D frames and there is no
tracking, so only the detection part of AOGM (vertices: NS, FN, FP) is computed, never the edge operations
of TRA (a simplified AOGM-D, named so in the output); (2) DET's reference: the frame's TRA markers, as in
the challenge, where the dataset keeps them (``markers`` in its manifest, the ``ctc`` source); elsewhere the
same label map as SEG's; (3) "the sequence" is the set of scored images (e.g. a test split drawing frames
from both sequences 01 and 02): :func:`quality_from_predictions` also reports each image-id prefix
(``01``, ``02``) as its own group, so that per-sequence values are at hand.

**Partial truth** (the CTC's gold SEG masks annotate only some cells of a frame; the manifest's
``truth_complete``, see ``datasets/README.md``): SEG runs over the annotated objects only, which is already
the CTC definition (a reference-side measure: a prediction of an unannotated cell matches nothing and does
not count); DET comes from the TRA markers, which mark every cell; the CVPPP measures and every AP count
unannotated cells as false positives, so the summary's ``truth`` block flags them
(:data:`PARTIAL_AP_NOTE`, :data:`PARTIAL_RULES`).

**CVPPP Leaf Segmentation Challenge (Table IV): bestDice (SBD), FgBgDice, diffFG, absDiffFG.** Source:
Scharr et al., "Leaf segmentation in plant phenotyping: a collation study", Machine Vision and Applications
27(4):585-606, 2016 (section on evaluation measures), and the challenge's evaluation script.

- ``Dice(A, B) = 2 |A ∩ B| / (|A| + |B|)``.
- ``BestDice(La, Lb) = (1/M) sum_{i=1..M} max_j Dice(La_i, Lb_j)`` over the M objects of La;
  ``SBD = min(BestDice(pred, gt), BestDice(gt, pred))`` (reported as ``best_dice``, the paper's bestDice).
- FgBgDice: Dice of the foreground masks (label > 0) of prediction and GT.
- DiffFG = #pred objects - #GT objects; absDiffFG = |DiffFG|.
- Each measure is computed per image and averaged over images (the challenge reports per image the values
  and per subset A1..A5 their mean and standard deviation; the "all" figure is the mean over all images).

Conventions where the definitions are silent: BestDice of a label map with no object is 0 (the challenge
script's "trivial solution" rule), so SBD is 0 when either side is empty; FgBgDice is 1 when neither side
has foreground (the script would divide by zero); object counts are the numbers of distinct non-zero labels
(the script counts ``max - min`` of the label values, the same for consecutive labels).

Both benchmarks need **non-overlapping** label maps (one id per pixel); our methods output possibly
overlapping instances with scores: :func:`instances_to_label_map` paints them in ascending score order, so a
higher-scoring instance wins the pixels it shares with a lower-scoring one.

Per-image functions return plain dicts (stardist ``matching.py`` style); :func:`aggregate_ctc` and
:func:`aggregate_cvppp` combine them with each benchmark's rule; :func:`quality_from_predictions` does the
whole thing for a predictions JSON and a GT folder (the readers of :mod:`objguided.metrics.coco`).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import numpy as np

from objguided.data.canonical import read_label_map
from objguided.errors import DataError

#: AOGM-D weights of the CTC DET measure: vertex splitting, false negative (missed), false positive (extra).
CTC_WEIGHTS = {"ns": 5, "fn": 10, "fp": 1}

#: Keys of the per-image and aggregated measure dicts (the table builders read these).
CVPPP_KEYS = ("best_dice", "abs_diff_fg", "diff_fg", "fg_bg_dice")

PAINT_RULE = ("instances painted in ascending score order: a higher-scoring instance wins shared pixels; "
              "equal scores: the earlier instance (file order) wins; an instance wholly covered vanishes")


# ------------------------------------------------------------------------------------------ overlaps

class Overlap(NamedTuple):
    """Pixel counts of a (GT, prediction) pair of label maps."""

    gt_ids: np.ndarray  # (G,) object ids of the GT, ascending
    pred_ids: np.ndarray  # (P,) object ids of the prediction, ascending
    inter: np.ndarray  # (G, P) |GT_i ∩ pred_j| in pixels
    gt_area: np.ndarray  # (G,)
    pred_area: np.ndarray  # (P,)


def _check_label_map(labels, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"{what}: label map of shape {labels.shape}; expected HxW")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DataError(f"{what}: label map of type {labels.dtype}; expected integer object ids")
    if labels.size and labels.min() < 0:
        raise DataError(f"{what}: label map holds negative ids; expected 0 = background")
    return labels


def _dense(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(object ids ascending, per pixel 0 for background or 1 + the index of its object id)."""
    ids, inv = np.unique(labels.ravel(), return_inverse=True)
    if ids.size and ids[0] == 0:
        return ids[1:].astype(np.int64), inv.astype(np.int64)
    return ids.astype(np.int64), inv.astype(np.int64) + 1


def overlap(gt, pred) -> Overlap:
    """The GT x prediction intersection matrix and the object areas (one ``bincount``).

    >>> gt = np.array([[1, 1, 0], [0, 2, 2]])
    >>> pred = np.array([[0, 4, 4], [0, 4, 0]])
    >>> o = overlap(gt, pred)
    >>> o.gt_ids.tolist(), o.pred_ids.tolist(), o.inter.tolist(), o.gt_area.tolist(), o.pred_area.tolist()
    ([1, 2], [4], [[1], [1]], [2, 2], [3])
    """
    gt = _check_label_map(gt, "ground truth")
    pred = _check_label_map(pred, "prediction")
    if gt.shape != pred.shape:
        raise DataError(f"prediction label map is {pred.shape[0]}x{pred.shape[1]} but the ground truth is "
                        f"{gt.shape[0]}x{gt.shape[1]}; they must be the same size")
    g_ids, g = _dense(gt)
    p_ids, p = _dense(pred)
    n_g, n_p = g_ids.size + 1, p_ids.size + 1
    table = np.bincount(g * n_p + p, minlength=n_g * n_p).reshape(n_g, n_p)
    return Overlap(g_ids, p_ids, table[1:, 1:], table[1:, :].sum(axis=1), table[:, 1:].sum(axis=0))


# ----------------------------------------------------------------------------------------------- CTC

def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _op_csb(seg: float | None, det: float | None) -> float | None:
    return None if seg is None or det is None else (seg + det) / 2


def _ctc_from(o: Overlap) -> dict:
    n_gt, n_pred = o.gt_ids.size, o.pred_ids.size
    match = 2 * o.inter > o.gt_area[:, None]  # |R ∩ S| > 0.5 |R|, in integers
    has_match = match.any(axis=1)
    j = match.argmax(axis=1) if n_pred else np.zeros(n_gt, np.int64)
    inter_m = o.inter[np.arange(n_gt), j] if n_pred else np.zeros(n_gt, np.int64)
    union_m = o.gt_area + (o.pred_area[j] if n_pred else 0) - inter_m
    jaccard = np.where(has_match, inter_m / np.maximum(union_m, 1), 0.0)
    per_pred = match.sum(axis=0)
    fn = int((~has_match).sum())
    fp = int((per_pred == 0).sum())
    ns = int(np.maximum(per_pred - 1, 0).sum())
    w = CTC_WEIGHTS
    aogm = w["ns"] * ns + w["fn"] * fn + w["fp"] * fp
    aogm0 = w["fn"] * n_gt
    seg = _ratio(float(jaccard.sum()), n_gt)
    det = 1.0 - min(aogm, aogm0) / aogm0 if aogm0 > 0 else None
    return {"seg": seg, "det": det, "op_csb": _op_csb(seg, det), "n_gt": int(n_gt), "n_pred": int(n_pred),
            "seg_matched": int(has_match.sum()), "jaccard_sum": float(jaccard.sum()),
            "ns": ns, "fn": fn, "fp": fp, "aogm_d": int(aogm), "aogm_d0": int(aogm0)}


def ctc_measures(gt, pred) -> dict:
    """CTC SEG, DET and OP_CSB of one image (module docstring), with the counts :func:`aggregate_ctc` pools.

    Keys: ``seg``, ``det``, ``op_csb`` (None when the GT has no object), ``n_gt``, ``n_pred``,
    ``seg_matched`` (GT objects with a match), ``jaccard_sum``, ``ns``, ``fn``, ``fp``, ``aogm_d``,
    ``aogm_d0``.

    Worked example: GT object 1 (4 px) is 3/4 covered by prediction 5 (3 px): matched, Jaccard 3/4.
    GT 2 (2 px) is half covered by prediction 7: not more than half, so unmatched (SEG 0 for it, FN for
    DET) and 7 is a false positive. GT 3 is missed and prediction 9 lies on background (FP).
    SEG = (0.75 + 0 + 0) / 3; AOGM-D = 10 * 2 (FN) + 1 * 2 (FP) = 22, AOGM-D_0 = 10 * 3, DET = 1 - 22/30.

    >>> gt = np.array([[1, 1, 0, 2],
    ...                [1, 1, 0, 2],
    ...                [0, 0, 0, 0],
    ...                [3, 3, 0, 0]])
    >>> pred = np.array([[5, 5, 0, 7],
    ...                  [5, 0, 0, 0],
    ...                  [0, 0, 0, 0],
    ...                  [0, 0, 9, 9]])
    >>> m = ctc_measures(gt, pred)
    >>> round(m["seg"], 4), round(m["det"], 4), round(m["op_csb"], 4), m["fn"], m["fp"], m["ns"]
    (0.25, 0.2667, 0.2583, 2, 2, 0)

    One prediction covering two GT objects: one split (NS = 1) instead of a miss.

    >>> m = ctc_measures(np.array([[1, 1, 2, 2]]), np.array([[3, 3, 3, 3]]))
    >>> m["ns"], m["fn"], m["fp"], m["aogm_d"], m["det"], m["seg"]
    (1, 0, 0, 5, 0.75, 0.5)
    """
    return _ctc_from(overlap(gt, pred))


def aggregate_ctc(items: Iterable[dict]) -> dict:
    """Pool per-image :func:`ctc_measures` over a sequence: SEG = (sum of Jaccards) / (all GT objects),
    DET = 1 - min(sum AOGM-D, sum AOGM-D_0) / sum AOGM-D_0, OP_CSB = their mean; None when there is no GT
    object at all. The counts are summed; ``images`` is the number of images.

    >>> a = ctc_measures(np.array([[1, 1]]), np.array([[1, 1]]))
    >>> b = ctc_measures(np.array([[1, 0, 2]]), np.array([[0, 0, 0]]))
    >>> agg = aggregate_ctc([a, b])
    >>> round(agg["seg"], 4), round(agg["det"], 4), agg["n_gt"], agg["fn"], agg["images"]
    (0.3333, 0.3333, 3, 2, 2)
    """
    items = list(items)
    tot = {k: sum(int(it[k]) for it in items) for k in ("n_gt", "n_pred", "seg_matched", "ns", "fn", "fp",
                                                       "aogm_d", "aogm_d0")}
    jac = float(sum(float(it["jaccard_sum"]) for it in items))
    seg = _ratio(jac, tot["n_gt"])
    det = 1.0 - min(tot["aogm_d"], tot["aogm_d0"]) / tot["aogm_d0"] if tot["aogm_d0"] > 0 else None
    return {"seg": seg, "det": det, "op_csb": _op_csb(seg, det), **tot, "jaccard_sum": jac, "images": len(items)}


# --------------------------------------------------------------------------------------------- CVPPP

def _best_dice(dice: np.ndarray) -> float:
    """Mean over rows of the row maximum; 0 without rows (no object), 0 per row without columns."""
    if dice.shape[0] == 0:
        return 0.0
    if dice.shape[1] == 0:
        return 0.0
    return float(dice.max(axis=1).mean())


def _cvppp_from(o: Overlap) -> dict:
    n_gt, n_pred = o.gt_ids.size, o.pred_ids.size
    dice = 2.0 * o.inter / np.maximum(o.gt_area[:, None] + o.pred_area[None, :], 1)
    bd_pred_gt = _best_dice(dice.T)
    bd_gt_pred = _best_dice(dice)
    fg_gt, fg_pred, fg_both = int(o.gt_area.sum()), int(o.pred_area.sum()), int(o.inter.sum())
    fg_bg = 2.0 * fg_both / (fg_gt + fg_pred) if fg_gt + fg_pred > 0 else 1.0
    diff = int(n_pred) - int(n_gt)
    return {"best_dice": min(bd_pred_gt, bd_gt_pred), "abs_diff_fg": abs(diff), "diff_fg": diff,
            "fg_bg_dice": float(fg_bg), "best_dice_pred_gt": bd_pred_gt, "best_dice_gt_pred": bd_gt_pred,
            "n_gt": int(n_gt), "n_pred": int(n_pred)}


def cvppp_measures(gt, pred) -> dict:
    """CVPPP LSC measures of one image (module docstring).

    Keys: ``best_dice`` (SBD), ``abs_diff_fg``, ``diff_fg`` (#pred - #GT), ``fg_bg_dice``, the two
    one-sided ``best_dice_pred_gt`` / ``best_dice_gt_pred``, ``n_gt``, ``n_pred``.

    Worked example: GT leaves 1 (2 px) and 2 (2 px); the prediction has one object 4 over 1's two pixels and
    one of 2's. Dice(4, 1) = 2*2/(3+2) = 0.8, Dice(4, 2) = 2*1/(3+2) = 0.4. BestDice(pred, gt) = 0.8;
    BestDice(gt, pred) = (0.8 + 0.4)/2 = 0.6; SBD = 0.6. Foreground: 4 GT px, 3 predicted, 3 shared:
    FgBgDice = 6/7. DiffFG = 1 - 2 = -1.

    >>> gt = np.array([[1, 1, 0], [0, 2, 2]])
    >>> pred = np.array([[4, 4, 0], [0, 4, 0]])
    >>> m = cvppp_measures(gt, pred)
    >>> round(m["best_dice"], 4), round(m["best_dice_pred_gt"], 4), round(m["fg_bg_dice"], 4)
    (0.6, 0.8, 0.8571)
    >>> m["diff_fg"], m["abs_diff_fg"]
    (-1, 1)
    """
    return _cvppp_from(overlap(gt, pred))


def aggregate_cvppp(items: Iterable[dict]) -> dict:
    """Average per-image :func:`cvppp_measures` over images (the challenge's rule): for each measure the
    mean and the population standard deviation (``<key>_std``, ddof 0); None without images.

    >>> a = cvppp_measures(np.array([[1, 2]]), np.array([[1, 2]]))
    >>> b = cvppp_measures(np.array([[1, 2]]), np.array([[1, 1]]))
    >>> agg = aggregate_cvppp([a, b])
    >>> agg["diff_fg"], agg["abs_diff_fg"], round(agg["best_dice"], 4), agg["fg_bg_dice"], agg["images"]
    (-0.5, 0.5, 0.8333, 1.0, 2)
    """
    items = list(items)
    out: dict = {}
    for key in CVPPP_KEYS + ("best_dice_pred_gt", "best_dice_gt_pred"):
        vals = np.array([float(it[key]) for it in items], float)
        out[key] = float(vals.mean()) if vals.size else None
        out[f"{key}_std"] = float(vals.std()) if vals.size else None
    out["n_gt"] = sum(int(it["n_gt"]) for it in items)
    out["n_pred"] = sum(int(it["n_pred"]) for it in items)
    out["images"] = len(items)
    return out


def aggregate(ctc_items: Iterable[dict], cvppp_items: Iterable[dict]) -> dict:
    """``{"ctc": aggregate_ctc(ctc_items), "cvppp": aggregate_cvppp(cvppp_items)}``."""
    return {"ctc": aggregate_ctc(ctc_items), "cvppp": aggregate_cvppp(cvppp_items)}


def measures(gt, pred) -> dict:
    """Both sets for one image from one overlap table: ``{"ctc": {...}, "cvppp": {...}}``."""
    o = overlap(gt, pred)
    return {"ctc": _ctc_from(o), "cvppp": _cvppp_from(o)}


# -------------------------------------------------------------------------------------------- painting

def _paint(n_pixels: int, pix: np.ndarray, own: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Flat label array (length ``n_pixels``): pixel ``pix[i]`` belongs to instance ``own[i]``; where
    instances overlap, the highest score wins, then the lowest instance index. Labels are index + 1."""
    scores = np.asarray(scores, float)
    n = scores.size
    order = np.argsort(-scores, kind="stable")  # best first; ties by index
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n - 1, -1, -1)  # best gets the highest rank
    winner = np.full(n_pixels, -1, np.int64)
    if pix.size:
        np.maximum.at(winner, pix, rank[own])
    inst_of_rank = order[::-1]
    out = np.zeros(n_pixels, np.int32)
    hit = winner >= 0
    out[hit] = inst_of_rank[winner[hit]] + 1
    return out


def instances_to_label_map(masks, scores, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Paint possibly overlapping instances into one non-overlapping int32 label map.

    ``masks``: N boolean HxW masks (a sequence or an (N, H, W) array); ``scores``: N numbers. Instance k gets
    label k + 1. Painting is in ascending score order, so a higher-scoring instance wins the pixels it
    shares with lower-scoring ones; with equal scores the earlier instance wins. An instance wholly covered
    by better ones vanishes from the map, and a partly covered one may be cut into pieces (both CTC and
    CVPPP measures need one id per pixel). ``shape`` is required when N = 0.

    >>> a = np.array([[1, 1, 0], [1, 1, 0]], bool)
    >>> b = np.array([[0, 1, 1], [0, 1, 1]], bool)
    >>> instances_to_label_map([a, b], [0.9, 0.5]).tolist()
    [[1, 1, 2], [1, 1, 2]]
    >>> instances_to_label_map([a, b], [0.5, 0.9]).tolist()
    [[1, 2, 2], [1, 2, 2]]
    >>> instances_to_label_map([], [], shape=(1, 2)).tolist()
    [[0, 0]]
    """
    scores = np.asarray(scores, float).reshape(-1)
    masks = [np.asarray(m) for m in masks]
    if len(masks) != scores.size:
        raise DataError(f"{len(masks)} masks but {scores.size} scores")
    if not masks:
        if shape is None:
            raise DataError("no instances and no shape: cannot size the label map")
        return np.zeros(tuple(shape), np.int32)
    hw = masks[0].shape
    if shape is not None and tuple(shape) != tuple(hw):
        raise DataError(f"masks are {hw} but shape {tuple(shape)} was asked for")
    for k, m in enumerate(masks):
        if m.shape != hw or m.ndim != 2:
            raise DataError(f"instance {k}: mask of shape {m.shape}; expected {hw}")
    if not np.isfinite(scores).all():
        raise DataError("non-finite score")
    pix_list = [np.flatnonzero(m) for m in masks]
    pix = np.concatenate(pix_list)
    own = np.repeat(np.arange(len(masks)), [p.size for p in pix_list])
    return _paint(int(np.prod(hw)), pix, own, scores).reshape(hw)


# ------------------------------------------------------------------------------------------ files

def _group_of(image_id: str) -> str | None:
    """The image id's prefix before the first ``_`` (CTC sequence ``01``, LSC subset ``A1``), or None."""
    head, sep, _ = image_id.partition("_")
    return head if sep and head else None


def quality_from_predictions(gt_dir, pred_path, split_path=None, subset=None, min_score: float = 0.0,
                             per_image: bool = False) -> dict:
    """CTC and CVPPP measures of a predictions JSON against a GT folder.

    ``gt_dir``, ``split_path`` and ``subset`` are as for ``objguided score`` (:func:`coco.gt_sources`);
    records are read, checked and decoded by the evaluator's one loop (:mod:`objguided.metrics.decode`: an
    image id outside the scored GT, an RLE whose size differs from its label map, a non-finite score or an
    empty mask is a ``DataError``). Predictions with ``score >= min_score`` are painted per image into one
    label map (:func:`instances_to_label_map`'s rule: higher score wins); a GT image without any kept
    prediction is scored against an empty map.

    Returns ``{"ctc": aggregate_ctc(...), "cvppp": aggregate_cvppp(...), "images": n, "groups": {prefix:
    {"ctc", "cvppp", "images"}}, "truth": {...}, "settings": {...}}``, plus ``"per_image"`` (a list of
    ``{"image_id", "ctc", "cvppp"}``) when ``per_image``. ``groups`` holds the image-id prefixes before the
    first ``_`` (CTC sequences ``01``/``02``, LSC subsets ``A1``..``A4``) when every scored id has one, else
    it is empty.
    """
    from objguided.metrics import decode

    min_score = float(min_score)
    g = decode.load(gt_dir, pred_path, split_path, subset, min_score=min_score)
    rows = decode.map_images(g, lambda d: {"image_id": d.image_id, **image_data_measures(d)})
    return summarise(rows, min_score, g.n_records, int(g.perm.size), per_image)


def _paint_keep(n_pixels: int, pix: np.ndarray, own: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Which entries (pixel ``pix[i]`` of instance ``own[i]``) :func:`_paint` keeps: on a pixel several
    instances share, only the highest-scoring one (then the lowest index); only shared pixels are sorted."""
    keep = np.ones(pix.size, bool)
    if pix.size == 0:
        return keep
    shared = np.flatnonzero(np.bincount(pix, minlength=n_pixels)[pix] > 1)
    if shared.size:
        prio = np.empty(scores.size, np.int64)
        prio[np.argsort(-np.asarray(scores, float), kind="stable")] = np.arange(scores.size)  # 0 = painted last
        m = shared[np.lexsort((prio[own[shared]], pix[shared]))]
        keep[m[1:][pix[m][1:] == pix[m][:-1]]] = False
    return keep


def _painted_overlap(ref: np.ndarray, cpix: np.ndarray, own: np.ndarray, n_pred: int,
                     ref_objects: tuple[np.ndarray, np.ndarray] | None = None) -> Overlap:
    """:func:`overlap` of ``ref`` with the painted prediction, from the painted pixel list alone (row-major
    ``cpix`` of instance ``own``): instances wholly painted over vanish, as in the label map.
    ``ref_objects``: ``ref``'s (ids, areas) when already known."""
    from objguided.metrics.ap import label_boxes

    ids, area = ref_objects if ref_objects is not None else label_boxes(ref)[:2]
    lut = np.zeros(int(ids[-1]) + 1 if ids.size else 1, np.int64)
    lut[ids] = np.arange(1, ids.size + 1)
    col = lut[ref.ravel()[cpix]]
    table = np.bincount(own * (ids.size + 1) + col, minlength=n_pred * (ids.size + 1)).reshape(n_pred, ids.size + 1)
    pred_area = table.sum(axis=1)
    alive = np.flatnonzero(pred_area)
    return Overlap(ids.astype(np.int64), alive + 1, table[alive, 1:].T, np.asarray(area, np.int64), pred_area[alive])


def image_measures(labels: np.ndarray, pix: np.ndarray, own: np.ndarray, scores: np.ndarray, *,
                   gt_objects: tuple[np.ndarray, np.ndarray] | None = None, markers: np.ndarray | None = None) -> dict:
    """Both sets of one image whose predictions are column-major pixel indices ``pix`` of instance ``own``
    (the evaluator's decoded RLE) with their ``scores``, painted by :func:`instances_to_label_map`'s rule;
    the same numbers as :func:`measures` on the painted label map, without painting or relabelling it.

    ``gt_objects``: the label map's (ids, areas) when known. ``markers``: the frame's TRA marker label map;
    when given, DET and its counts come from the markers as reference (the challenge's DET), SEG still
    from the label map (``det_reference`` says which)."""
    h, w = labels.shape
    scores = np.asarray(scores, float)
    keep = _paint_keep(h * w, pix, own, scores)
    cpix = (pix[keep] % h) * w + pix[keep] // h
    o = _painted_overlap(labels, cpix, own[keep], scores.size, gt_objects)
    ctc = _ctc_from(o)
    if markers is not None:
        if markers.shape != labels.shape:
            raise DataError(f"TRA markers are {markers.shape[0]}x{markers.shape[1]} but the label map is {h}x{w}")
        det = _ctc_from(_painted_overlap(markers, cpix, own[keep], scores.size))
        ctc.update({k: det[k] for k in ("det", "ns", "fn", "fp", "aogm_d", "aogm_d0")}, n_markers=det["n_gt"])
        ctc["op_csb"] = _op_csb(ctc["seg"], ctc["det"])
    ctc["det_reference"] = "markers" if markers is not None else "labels"
    return {"ctc": ctc, "cvppp": _cvppp_from(o)}


def image_data_measures(d, gt_objects: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """:func:`image_measures` of one :class:`objguided.metrics.decode.ImageData` (reads its TRA markers)."""
    markers = read_label_map(d.markers) if d.markers is not None else None
    out = image_measures(d.labels, d.pix, d.own, d.scores, gt_objects=gt_objects, markers=markers)
    out["ctc"]["truth_complete"] = bool(d.complete)
    return out


#: the flag every AP-like figure scored on partial truth carries (metrics.json, Tables III and IV)
PARTIAL_AP_NOTE = "partial truth: AP counts unannotated cells as false positives"

PARTIAL_RULES = {
    "seg": "CTC SEG over the annotated objects only: mean Jaccard of each annotated object with the predicted "
           "object covering more than half of it (0 without one); predictions on unannotated cells do not count",
    "det": "simplified AOGM-D against the TRA markers where the frame has them (every cell of the frame): a "
           "marker is detected by the predicted object covering more than half of its pixels; FN = markers "
           "detected by none, FP = predicted objects detecting no marker, NS = sum over predicted objects of "
           "(markers detected - 1); DET = 1 - min(5 NS + 10 FN + 1 FP, 10 markers) / (10 markers), pooled; "
           "no tracking edges. Frames without markers: the same against the label map's objects",
    "cvppp": "bestDice, FgBgDice and diffFG count unannotated objects as false positives: not comparable on "
             "partial truth",
}


def truth_summary(ctc_rows: list[dict]) -> dict:
    """How many scored images have partial truth and DET from markers, with the rules that then apply."""
    partial = sum(1 for c in ctc_rows if c.get("truth_complete") is False)
    markers = sum(1 for c in ctc_rows if c.get("det_reference") == "markers")
    out = {"images": len(ctc_rows), "partial": partial, "det_from_markers": markers,
           "seg": PARTIAL_RULES["seg"] if partial else "CTC SEG over the label map's objects",
           "det": PARTIAL_RULES["det"] if markers else "simplified AOGM-D against the label map's objects"}
    if partial:
        out.update(ap_note=PARTIAL_AP_NOTE, cvppp=PARTIAL_RULES["cvppp"])
    return out


def summarise(rows: list[dict], min_score: float, n_predictions: int, n_kept: int, per_image: bool = False) -> dict:
    """The returned dict of :func:`quality_from_predictions` from per-image rows ``{"image_id", "ctc",
    "cvppp"}`` (in scoring order): the aggregates, the groups by image-id prefix and the settings."""
    groups: dict[str, dict] = {}
    names = [_group_of(r["image_id"]) for r in rows]
    if names and all(names):
        for name in dict.fromkeys(names):
            sel = [r for r, g in zip(rows, names) if g == name]
            groups[name] = {**aggregate([r["ctc"] for r in sel], [r["cvppp"] for r in sel]), "images": len(sel)}
    out = {
        **aggregate([r["ctc"] for r in rows], [r["cvppp"] for r in rows]),
        "images": len(rows),
        "groups": groups,
        "truth": truth_summary([r["ctc"] for r in rows]),
        "settings": {"min_score": float(min_score), "predictions": n_predictions, "predictions_kept": n_kept,
                     "paint": PAINT_RULE, "ctc_weights": dict(CTC_WEIGHTS),
                     "ctc_pooling": "SEG and DET pooled over all scored images (one sequence)",
                     "cvppp_averaging": "mean over images (std: ddof 0)"},
    }
    if per_image:
        out["per_image"] = rows
    return out
