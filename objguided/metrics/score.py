"""``objguided score``: ground-truth label maps + a predictions JSON -> the metrics dict.

The protocol is REFERENCE.md section 2 (see :mod:`objguided.metrics.ap`). Conventions this module fixes:

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
- Extras (``extras=True``): ``coco_ap_seg`` (COCO mask AP@[.5:.95], all GT objects, cap lifted, see
  :mod:`objguided.metrics.cocoeval`) and ``dsb_score`` (2018 Data Science Bowl: per image the mean over
  the ten thresholds of TP/(TP+FP+FN), one-to-one matching at binary mask IoU > t, all GT objects, none
  dropped; an image with no GT and no prediction scores 1; then the plain mean over images), and
  ``quality``: the Cell Tracking Challenge and CVPPP measures of the predictions painted per image into one
  label map (:mod:`objguided.metrics.quality`), computed from this same pass's decoding.

Per image work is one pass: the RLE strings of the whole file are parsed at once into foreground runs,
runs become pixel indices, one ``bincount`` over the GT labels under those pixels gives the
prediction x GT intersection matrix, and the ten thresholds of both criteria are matched from it.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os

import numpy as np

from objguided.data.canonical import read_label_map
from objguided.errors import ConfigError, DataError
from objguided.metrics import ap, quality
from objguided.metrics.coco import (
    CATEGORY_ID,
    _load_json_list,
    check_nonempty,
    check_records,
    gt_coco_dict,
    gt_sources,
    parse_rle_counts,
    record_images,
    runs_to_pixels,
)

DEFAULT_THRESHOLDS = np.linspace(0.5, 0.95, 10)
EVALUATOR_NAME = "objguided-voc2010"
EVALUATOR_VERSION = "1.0"


def _threads() -> int:
    """Worker processes: ``OBJGUIDED_THREADS``, else ``OMP_NUM_THREADS``, else the CPU count (1 = serial)."""
    for var in ("OBJGUIDED_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return os.cpu_count() or 1


_JOBS: dict[int, object] = {}


def _run_job(args):
    token, k = args
    try:
        return _JOBS[token](k)
    except DataError as exc:  # returned, so that the parent raises the first error in input order
        return exc


def _map_chunks(fn, n_items: int) -> list:
    """Split ``range(n_items)`` into contiguous chunks and return ``[fn(lo, hi) for each chunk]``, on forked
    worker processes when there are several cores and enough items (the per-image work is numpy on small
    arrays and PNG decoding, which hold the GIL: threads do not help). Workers inherit the parsed JSON by
    fork; only small per-image results travel back. DataErrors are raised in chunk order (deterministic)."""
    workers = min(_threads(), n_items // 8)
    if workers < 2 or "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        return [fn(0, n_items)]
    edges = np.linspace(0, n_items, 4 * workers + 1).round().astype(int)
    chunks = [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    token = id(fn)
    _JOBS[token] = lambda c: fn(*c)
    gc.freeze()  # children's garbage collections then skip the inherited objects (no copy-on-write storm)
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            out = pool.map(_run_job, [(token, c) for c in chunks], chunksize=1)
    finally:
        gc.unfreeze()
        del _JOBS[token]
    for r in out:
        if isinstance(r, DataError):
            raise r
    return out


def score_predictions(gt, pred_path, *, split_path=None, subset=None, box_convention="inclusive",
                      mask_iou="binary", extras=True) -> dict:
    """Score a predictions JSON against GT label maps; returns the metrics dict (see module docstring)."""
    if box_convention not in ap.BOX_CONVENTIONS:
        raise ConfigError(f"box_convention {box_convention!r} unknown; expected one of {sorted(ap.BOX_CONVENTIONS)}")
    if mask_iou not in ap.MASK_IOU:
        raise ConfigError(f"mask_iou {mask_iou!r} unknown; expected one of {list(ap.MASK_IOU)}")
    thresholds = DEFAULT_THRESHOLDS
    sources = gt_sources(gt, split_path, subset)
    where = str(pred_path)
    records = _load_json_list(pred_path)
    ids, counts, sizes, scores, soft = check_records(records, where)
    img = record_images(ids, sources, where, gt, subset)
    perm = np.argsort(img, kind="stable")  # grouped by image, file order within
    img_s = img[perm]
    bounds = np.searchsorted(img_s, np.arange(len(sources) + 1))
    sizes_s, soft_s, scores_s = sizes[perm], soft[perm], np.asarray(scores, np.float64)[perm]

    def one_chunk(k0: int, k1: int) -> list:
        """Images k0..k1-1: parse their records' RLE, then match each image."""
        a0, b0 = int(bounds[k0]), int(bounds[k1])
        sel = perm[a0:b0]
        runs = parse_rle_counts([counts[i] for i in sel], sizes_s[a0:b0], where, index_of=sel)
        check_nonempty(runs, [ids[i] for i in sel], where, index_of=sel)
        return [one_image(k, runs, a0) for k in range(k0, k1)]

    def one_image(k: int, runs, a0: int):
        image_id, path = sources[k]
        labels = read_label_map(path)
        a, b = int(bounds[k]), int(bounds[k + 1])
        if b > a:
            bad = np.flatnonzero((sizes_s[a:b] != labels.shape).any(axis=1))
            if bad.size:
                j = a + int(bad[0])
                raise DataError(f"{where}: record {int(perm[j])}: image '{image_id}': RLE size "
                                f"{sizes_s[j, 0]}x{sizes_s[j, 1]} differs from its ground-truth label map "
                                f"{labels.shape[0]}x{labels.shape[1]} ({path})")
        first = runs.first[a - a0:b - a0 + 1]
        r0, r1 = int(first[0]), int(first[-1])
        pix, own = runs_to_pixels(runs.start[r0:r1], runs.length[r0:r1], np.repeat(np.arange(b - a), np.diff(first)))
        o = ap.overlaps(labels, pix, own, b - a, order="F")
        seg, dec, kept = ap.best_matches(o, box_convention=box_convention, mask_iou_mode=mask_iou,
                                         soft_area=soft_s[a:b])
        dsb = ap.dsb_counts(o, thresholds) if extras else None
        coco = gt_coco_dict([(image_id, labels)]) if extras else None
        # the CTC / CVPPP measures from this same decoding (objguided.metrics.quality)
        qual = {"image_id": image_id, **quality.image_measures(labels, pix, own, scores_s[a:b])} if extras else None
        return seg, dec, kept, o.gt_ids.size, dsb, coco, qual

    n_img = len(sources)
    results = [r for chunk in _map_chunks(one_chunk, n_img) for r in chunk]

    offsets = np.concatenate(([0], np.cumsum([r[3] for r in results]))).astype(np.int64)
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    img_of_pred = img_s
    seg_idx = cat([r[0].index for r in results], np.int64)
    dec_idx = cat([r[1].index for r in results], np.int64)
    base = offsets[img_of_pred] if img_of_pred.size else np.zeros(0, np.int64)
    seg = ap.Best(np.where(seg_idx >= 0, seg_idx + base, -1), cat([r[0].iou for r in results], float))
    dec = ap.Best(np.where(dec_idx >= 0, dec_idx + base, -1), cat([r[1].iou for r in results], float))
    kept_per_image = np.array([int(r[2].sum()) for r in results], np.int64)
    gt_per_image = np.array([r[3] for r in results], np.int64)
    n_kept = int(kept_per_image.sum())

    rank = ap.pooled_rank(scores[perm])
    tp_seg = ap.match(seg, rank, thresholds, "seg")
    tp_dec = ap.match(dec, rank, thresholds, "dec")
    ap_seg = ap.voc_ap(tp_seg, n_kept)
    ap_dec = ap.voc_ap(tp_dec, n_kept)
    ranked_img = img_of_pred[rank]
    per_tp_seg = np.stack([np.bincount(ranked_img[t], minlength=n_img) for t in tp_seg]) if n_img else None
    per_tp_dec = np.stack([np.bincount(ranked_img[t], minlength=n_img) for t in tp_dec]) if n_img else None
    n_pred = np.diff(bounds)
    # Per-prediction match data for the report's bootstrap over images (objguided.report.bootstrap): the TP
    # flags are a property of the image alone (matching is per image, in score order), so a resample of
    # images only has to pool these again. Stored in file order within each image, as one bit mask per
    # prediction (bit i = TP at thresholds[i]), to keep metrics.json small.
    bits = np.left_shift(1, np.arange(len(thresholds), dtype=np.int64))[:, None]
    seg_bits, dec_bits = np.zeros(len(rank), np.int64), np.zeros(len(rank), np.int64)
    seg_bits[rank] = (tp_seg * bits).sum(axis=0)
    dec_bits[rank] = (tp_dec * bits).sum(axis=0)

    extra = {"coco_ap_seg": None, "dsb_score": None}
    dsb_scores = [None] * n_img
    qualities = None
    if extras:
        qualities = quality.summarise([r[6] for r in results], 0.0, len(records), len(records))
        dsb_scores = [ap.dsb_image_score(r[4], int(n_pred[k]), int(gt_per_image[k])) for k, r in enumerate(results)]
        from objguided.metrics.cocoeval import coco_mask_ap

        coco_gt = {"images": [im for r in results for im in r[5]["images"]],
                   "annotations": [], "categories": results[0][5]["categories"] if results else []}
        for r in results:
            for a in r[5]["annotations"]:
                coco_gt["annotations"].append(dict(a, id=len(coco_gt["annotations"]) + 1))
        extra = {"dsb_score": float(np.mean(dsb_scores)) if dsb_scores else None}
        extra.update(coco_mask_ap(coco_gt, records))
        extra = {"coco_ap_seg": extra.pop("coco_ap_seg"), **extra}

    per_image = [{"image_id": sources[k][0], "gt_kept": int(kept_per_image[k]),
                  "gt_dropped": int(gt_per_image[k] - kept_per_image[k]), "predictions": int(n_pred[k]),
                  "tp_seg": per_tp_seg[:, k].tolist(), "tp_dec": per_tp_dec[:, k].tolist(),
                  "dsb_score": dsb_scores[k],
                  "pred_scores": scores_s[bounds[k]:bounds[k + 1]].tolist(),
                  "pred_tp_seg": seg_bits[bounds[k]:bounds[k + 1]].tolist(),
                  "pred_tp_dec": dec_bits[bounds[k]:bounds[k + 1]].tolist()} for k in range(n_img)]
    ap_seg_l, ap_dec_l = [float(v) for v in ap_seg], [float(v) for v in ap_dec]
    return {
        "evaluator": {
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
            "extras": {
                "coco_ap_seg": "COCO mask AP@[.5:.95] (101-point, area all), all GT objects, maxDets lifted "
                               "above the largest per-image count; 0.0 with no predictions",
                "dsb_score": "2018 DSB: per image mean over the thresholds of TP/(TP+FP+FN), one-to-one "
                             "matching at binary mask IoU > t, all GT objects; 1.0 for an image with no GT "
                             "and no prediction; mean over images",
            },
        },
        "thresholds": [float(t) for t in thresholds],
        "ap_seg": ap_seg_l, "ap_dec": ap_dec_l,
        "ap_seg_mean": float(np.mean(ap_seg)), "ap_dec_mean": float(np.mean(ap_dec)),
        "ap_seg_50": ap_seg_l[0], "ap_seg_75": ap_seg_l[5],
        "counts": {"images": n_img, "gt_kept": n_kept, "gt_dropped": int(gt_per_image.sum() - n_kept),
                   "predictions": len(records), "tp_seg": tp_seg.sum(axis=1).astype(int).tolist(),
                   "tp_dec": tp_dec.sum(axis=1).astype(int).tolist()},
        "extra": extra,
        **({"quality": qualities} if qualities is not None else {}),
        "per_image": per_image,
    }
