"""COCO mask AP (``coco_ap_seg``) by the COCO tools themselves: the reference the scorer is held to.

``objguided score`` computes ``coco_ap_seg`` from its own IoU pass (:func:`objguided.metrics.ap.coco_image_tp`,
:func:`objguided.metrics.ap.coco_ap`); this module runs faster-coco-eval or pycocotools on the same inputs,
for the tests that hold the two equal (tests/test_score_coco_equality.py) and for benchmarks.

Not the paper's protocol (101-point interpolation, greedy matching with fall-back, all GT objects, none
dropped); reported only as an extra column. COCO caps detections per image at ``maxDets`` (100 by
default) while DSB2018 has up to 375 nuclei per image, so the cap is lifted above the largest
per-image count of predictions and GT objects, and a result of -1 (COCO's "undefined") is an error.

Uses faster-coco-eval (C++, same numbers as pycocotools) when installed, else pycocotools. COCO needs
integer image ids: string ids are mapped to 1..N here (in GT image order) and never leave this module.

The category rule is the one of :func:`objguided.metrics.coco.check_records`: a detection whose
``category_id`` is not a category of the ground truth is an error here too, never silently left out (COCO
itself would ignore it, while the paper's class-agnostic APseg counts it).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections import Counter

import numpy as np

from objguided.errors import DataError


def coco_backend(name: str = "auto"):
    """(name, COCO class, COCOeval class) for ``"faster-coco-eval"``, ``"pycocotools"`` or ``"auto"``."""
    if name in ("auto", "faster-coco-eval"):
        try:
            import faster_coco_eval
            from faster_coco_eval import COCO, COCOeval_faster

            return f"faster-coco-eval {faster_coco_eval.__version__}", COCO, COCOeval_faster
        except ImportError:
            if name != "auto":
                raise
    if name in ("auto", "pycocotools"):
        import pycocotools
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return f"pycocotools {getattr(pycocotools, '__version__', '')}".strip(), COCO, COCOeval
    raise ValueError(f"unknown COCO backend {name!r}; expected 'auto', 'faster-coco-eval' or 'pycocotools'")


def to_integer_ids(gt: dict, records: list[dict]) -> tuple[dict, list[dict], int]:
    """Copies of a GT COCO dict (string image ids) and of results records, with image ids 1..N; and the
    detection cap (max(100, largest per-image count of predictions or GT objects))."""
    index = {img["id"]: k + 1 for k, img in enumerate(gt["images"])}
    categories = [c["id"] for c in gt.get("categories", [])]
    g = dict(gt)
    g["images"] = [dict(img, id=index[img["id"]]) for img in gt["images"]]
    g["annotations"] = [dict(a, image_id=index[a["image_id"]]) for a in gt["annotations"]]
    dets = []
    for r in records:
        if r["image_id"] not in index:
            raise DataError(f"COCO AP: unknown image id {r['image_id']!r}")
        if type(r.get("category_id")) is not int or r["category_id"] not in categories:
            raise DataError(f"COCO AP: detection {len(dets)} (image {r['image_id']!r}): category_id "
                            f"{r.get('category_id')!r} is not a ground-truth category (expected one of "
                            f"{categories}); it would be left out of COCO AP but counted by APseg")
        d = {"image_id": index[r["image_id"]], "category_id": r["category_id"],
             "segmentation": dict(r["segmentation"]), "score": float(r["score"])}
        dets.append(d)  # no 'bbox': loadRes then takes area and box from the mask
    n_dets = Counter(d["image_id"] for d in dets)
    n_gts = Counter(a["image_id"] for a in g["annotations"])
    cap = max([100, *n_dets.values(), *n_gts.values()])
    return g, dets, cap


def coco_mask_ap(gt: dict, records: list[dict], backend: str = "auto") -> dict:
    """COCO mask AP@[.5:.95] (area 'all', cap lifted). Returns {coco_ap_seg, coco_max_dets, coco_backend}.

    No predictions gives 0.0 (COCO would fail to load an empty results list); no GT object is an error.
    """
    g, dets, cap = to_integer_ids(gt, records)
    if not g["annotations"]:
        raise DataError("COCO mask AP is undefined (-1) with no ground-truth object")
    name, COCO, COCOeval = coco_backend(backend)
    if not dets:
        return {"coco_ap_seg": 0.0, "coco_max_dets": cap, "coco_backend": name}
    with contextlib.redirect_stdout(io.StringIO()):
        if name.startswith("faster"):
            cgt = COCO(copy.deepcopy(g))
        else:
            cgt = COCO()
            cgt.dataset = copy.deepcopy(g)
            cgt.createIndex()
        cdt = cgt.loadRes(dets)
        ev = COCOeval(cgt, cdt, "segm")
        ev.params.imgIds = sorted(img["id"] for img in g["images"])
        ev.params.maxDets = [1, 10, cap]
        ev.evaluate()
        ev.accumulate()
    area_all = list(ev.params.areaRngLbl).index("all")
    prec = np.asarray(ev.eval["precision"])[:, :, :, area_all, -1]
    valid = prec[prec > -1]
    if valid.size == 0:
        raise DataError("COCO mask AP came out -1 (undefined); check the ground truth and predictions")
    return {"coco_ap_seg": float(np.mean(valid)), "coco_max_dets": int(cap), "coco_backend": name}
