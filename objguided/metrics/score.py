"""``objguided score``: ground-truth label maps + a predictions JSON -> the metrics dict.

The protocol is docs/protocol.md (see :mod:`objguided.metrics.ap`). Conventions this module fixes:

- Image order = the GT order (sorted stems, or the split's order with ``subset``); predictions keep
  their file order within an image. The pooled ranking is a *stable* sort on descending score, so equal
  scores rank by image order, then by order within the image (file order).
- GT images without any prediction are scored (their kept objects are false negatives); a prediction
  for an image id that is not scored is an error, as are RLE size mismatches, non-finite scores and
  empty masks.
- Categories: the ground truth has one category (``coco.CATEGORY_ID``); a prediction with any other
  ``category_id`` is an error naming the file, the record and the expected id, so that APseg / APdec
  (class-agnostic) and the COCO AP extra (per category) always score the same predictions (the reasons:
  :func:`objguided.metrics.coco.check_records`).
- No kept GT object in the whole set: AP is 0 at every threshold (recall is undefined; documented).
- Extras (``extras=True``): ``coco_ap_seg`` (COCO mask AP@[.5:.95], all GT objects, cap lifted: pycocotools'
  evaluateImg/accumulate rules on this pass's IoU matrices, :func:`objguided.metrics.ap.coco_image_tp` and
  :func:`objguided.metrics.ap.coco_ap`; ``tests/test_score_coco_equality.py`` holds it equal to
  faster-coco-eval and pycocotools) and ``dsb_score`` (2018 Data Science Bowl: per image the mean over
  the ten thresholds of TP/(TP+FP+FN), one-to-one matching at binary mask IoU > t, all GT objects, none
  dropped; an image with no GT and no prediction scores 1; then the plain mean over images), and
  ``quality``: the Cell Tracking Challenge and CVPPP measures of the predictions painted per image into one
  label map (:mod:`objguided.metrics.quality`), computed from this same pass's decoding.

- Partial truth (the dataset's manifest marks images whose label map annotates only some objects,
  ``datasets/README.md``): the metrics carry ``truth`` and, when any scored image is partial, ``ap_note``
  (:data:`objguided.metrics.quality.PARTIAL_AP_NOTE`): AP, COCO AP and the DSB score then count every
  correct prediction of an unannotated cell as a false positive; the CTC measures follow the challenge's
  rules on partial truth (:mod:`objguided.metrics.quality`).

Per image work is one pass (:mod:`objguided.metrics.decode` reads and decodes): the image's RLE runs become
pixel indices, one ``bincount`` over the GT labels under those pixels gives the prediction x GT
intersection matrix, and every measure is matched from it (:func:`objguided.metrics.ap.match_image`); the
CTC / CVPPP measures paint the same pixel lists.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from objguided.errors import ConfigError
from objguided.metrics import ap, decode, quality
from objguided.metrics.coco import CATEGORY_ID

DEFAULT_THRESHOLDS = np.linspace(0.5, 0.95, 10)
EVALUATOR_NAME = "objguided-voc2010"
EVALUATOR_VERSION = "1.1"
COCO_BACKEND = "objguided: pycocotools evaluateImg/accumulate rules on the evaluator's own IoU matrices"


@dataclass(frozen=True)
class ImageResult:
    """What one image gives the set-level metrics."""

    image_id: str
    match: ap.ImageMatch
    n_pred: int
    complete: bool  # False: partial truth
    quality: dict | None  # {"image_id", "ctc", "cvppp"} with extras, else None


def _score_image(d: decode.ImageData, *, box_convention: str, mask_iou: str, extras: bool) -> ImageResult:
    o = ap.overlaps(d.labels, d.pix, d.own, d.n_pred, order="F")
    m = ap.match_image(o, d.scores, box_convention=box_convention, mask_iou_mode=mask_iou, soft_area=d.soft,
                       thresholds=DEFAULT_THRESHOLDS, extras=extras)
    qual = None
    if extras:  # the CTC / CVPPP measures from this same decoding
        qual = {"image_id": d.image_id, **quality.image_data_measures(d, (o.gt_ids, o.gt_area))}
    return ImageResult(d.image_id, m, d.n_pred, d.complete, qual)


def score_predictions(gt, pred_path, *, split_path=None, subset=None, box_convention="inclusive",
                      mask_iou="binary", extras=True) -> dict:
    """Score a predictions JSON against GT label maps; returns the metrics dict (see module docstring)."""
    if box_convention not in ap.BOX_CONVENTIONS:
        raise ConfigError(f"box_convention {box_convention!r} unknown; expected one of {sorted(ap.BOX_CONVENTIONS)}")
    if mask_iou not in ap.MASK_IOU:
        raise ConfigError(f"mask_iou {mask_iou!r} unknown; expected one of {list(ap.MASK_IOU)}")
    g = decode.load(gt, pred_path, split_path, subset)
    fn = functools.partial(_score_image, box_convention=box_convention, mask_iou=mask_iou, extras=extras)
    results: list[ImageResult] = decode.map_images(g, fn)
    pooled = ap.pool([r.match for r in results], g.scores[g.perm], DEFAULT_THRESHOLDS)
    return _metrics(g, results, pooled, box_convention, mask_iou, extras)


def _metrics(g: decode.Grouped, results: list[ImageResult], p: ap.Pooled, box_convention: str, mask_iou: str,
             extras: bool) -> dict:
    ap_seg, ap_dec = [float(v) for v in p.ap_seg], [float(v) for v in p.ap_dec]
    out = {
        "evaluator": _evaluator(box_convention, mask_iou),
        "thresholds": [float(t) for t in DEFAULT_THRESHOLDS],
        "ap_seg": ap_seg, "ap_dec": ap_dec,
        "ap_seg_mean": float(np.mean(ap_seg)), "ap_dec_mean": float(np.mean(ap_dec)),
        "ap_seg_50": ap_seg[0], "ap_seg_75": ap_seg[5],
        "counts": {"images": len(results), "gt_kept": p.gt_kept, "gt_dropped": p.gt_all - p.gt_kept,
                   "predictions": g.n_records, "tp_seg": p.tp_seg.sum(axis=1).astype(int).tolist(),
                   "tp_dec": p.tp_dec.sum(axis=1).astype(int).tolist()},
        "extra": {"coco_ap_seg": None, "dsb_score": None},
    }
    dsb = [None] * len(results)
    if extras:
        dsb = [ap.dsb_image_score(r.match.dsb_tp, r.n_pred, r.match.n_gt) for r in results]
        cap = max([100, *(r.n_pred for r in results), *(r.match.n_gt for r in results)])
        out["extra"] = {"coco_ap_seg": p.coco_ap, "dsb_score": float(np.mean(dsb)) if dsb else None,
                        "coco_max_dets": cap, "coco_backend": COCO_BACKEND}
        out["quality"] = quality.summarise([r.quality for r in results], 0.0, g.n_records, g.n_records)
    partial = sum(1 for r in results if not r.complete)
    out["truth"] = {"images": len(results), "partial": partial}
    if partial:
        out["ap_note"] = quality.PARTIAL_AP_NOTE
    out["per_image"] = _per_image(g, results, p, dsb)
    return out


def _per_image(g: decode.Grouped, results: list[ImageResult], p: ap.Pooled, dsb: list) -> list[dict]:
    """Per image counts and, for the report's bootstrap over images (objguided.report.bootstrap), the
    per-prediction match data: TP flags are a property of the image alone (matching is per image, in score
    order), so a resample of images only has to pool these again. Stored in file order within each image,
    one bit mask per prediction (bit i = TP at thresholds[i]), to keep metrics.json small."""
    n_img, b = len(results), g.bounds
    ranked_img = np.repeat(np.arange(n_img), np.diff(b))[p.rank]
    per_tp = {k: np.stack([np.bincount(ranked_img[t], minlength=n_img) for t in tp]) if n_img else None
              for k, tp in (("seg", p.tp_seg), ("dec", p.tp_dec))}
    bits = np.left_shift(1, np.arange(len(DEFAULT_THRESHOLDS), dtype=np.int64))[:, None]
    pred_bits = {}
    for k, tp in (("seg", p.tp_seg), ("dec", p.tp_dec)):
        pred_bits[k] = np.zeros(len(p.rank), np.int64)
        pred_bits[k][p.rank] = (tp * bits).sum(axis=0)
    scores = g.scores[g.perm]
    return [{"image_id": r.image_id, "gt_kept": int(r.match.kept.sum()), "gt_dropped": int((~r.match.kept).sum()),
             "predictions": r.n_pred, "tp_seg": per_tp["seg"][:, k].tolist(), "tp_dec": per_tp["dec"][:, k].tolist(),
             "dsb_score": dsb[k], "truth_complete": r.complete, "pred_scores": scores[b[k]:b[k + 1]].tolist(),
             "pred_tp_seg": pred_bits["seg"][b[k]:b[k + 1]].tolist(),
             "pred_tp_dec": pred_bits["dec"][b[k]:b[k + 1]].tolist()} for k, r in enumerate(results)]


def _evaluator(box_convention: str, mask_iou: str) -> dict:
    return {
        "name": EVALUATOR_NAME, "version": EVALUATOR_VERSION, "box_convention": box_convention,
        "mask_iou": mask_iou, "ap_definition": "VOC2010 all-point", "sort": "stable descending score",
        "tie_order": "equal scores rank by image order (GT order), then by order in the predictions file",
        "criteria": {"seg": "mask IoU > t", "dec": "box IoU >= t"},
        "gt_drop_rule": ap.GT_DROP_RULE, "match_rule": ap.MATCH_RULE,
        "category_rule": f"single class: every prediction has category_id {CATEGORY_ID} (the ground "
                         "truth's); a file with any other id is rejected, not scored",
        "no_gt": "AP = 0 when there is no kept GT object; AP = 0 with no predictions",
        "per_image_match": "pred_scores: the image's prediction scores in file order; pred_tp_seg / "
                           "pred_tp_dec: per prediction a bit mask, bit i set when it is a TP at "
                           "thresholds[i]; with gt_kept, enough to pool any resample of images again",
        "partial_truth": f"truth.partial counts the scored images whose label map annotates only some objects; "
                         f"when any is, ap_note says '{quality.PARTIAL_AP_NOTE}' (AP, COCO AP and the DSB "
                         "score included)",
        "extras": {
            "coco_ap_seg": "COCO mask AP@[.5:.95] (101-point, area all), all GT objects, maxDets lifted "
                           "above the largest per-image count; 0.0 with no predictions, None with no GT object",
            "dsb_score": "2018 DSB: per image mean over the thresholds of TP/(TP+FP+FN), one-to-one "
                         "matching at binary mask IoU > t, all GT objects; 1.0 for an image with no GT "
                         "and no prediction; mean over images",
        },
    }
