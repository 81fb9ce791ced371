"""The ceiling each ObjGuided inference path allows, without training (DSB2018 test split).

A "perfect" network is simulated from the ground truth: each GT object is mapped into the 512 input
frame (nearest, as training warps masks), reduced to what ``build_targets`` trains on (largest
4-connected component, objects wider and taller than 3 px), and its ROI output is the training target
itself: the input-frame mask sampled bilinearly on the ROI grid of its true box. Those detections go
through ``to_instances`` and the harness's evaluator, so every point lost is lost by the frame mapping,
the ROI resolution, the splatting/threshold/resize of the post-processing, or the scoring convention.

Paths (each a row of the table):

* ``paper``  : stretch frame (the paper resizes test images to 512x512), ``PostConfig("paper")``
  (normalised splat, 0.5, nearest, binary masks), scored with binary mask IoU;
* ``code``   : stretch frame, ``PostConfig("code")`` (raw splat, 0.5 as the authors' README evaluates,
  bilinear, soft crops), scored with the authors' soft-area IoU, and with binary IoU on the same supports;
* ``code-0.53``: the same at main.py's default threshold 0.53;
* ``paper-letterbox`` / ``code-letterbox``: the two post-processings with the letterbox frame (the option).

Usage::

    .venv/bin/python benchmarks/objguided_ceiling.py [--zip PATH] [--split PATH] [--size 512] [--limit N]
        [--out benchmarks/results/objguided_ceiling.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from objguided.data.canonical import write_sample
from objguided.metrics.coco import encode_instances, write_predictions
from objguided.metrics.score import score_predictions
from objguided.models.config import ModelConfig
from objguided.models.postprocess import PostConfig, to_instances
from objguided.models.preprocess import Frame
from objguided.models.roi import inclusive_to_cxcywh, roi_levels, sample_separable
from objguided.models.targets import build_targets
from objguided_methods.base import Instance

ZIP = "/work/shared/data/dsb2018/stage1_train.zip"
SPLIT = "/work/shared/splits/dsb2018/test.txt"


def build_gt(zip_path: str, ids: list[str], root: Path) -> int:
    """Canonical GT folder of ``ids`` from the Kaggle zip (later masks win overlapping pixels)."""
    n_obj = 0
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        for image_id in ids:
            with zf.open(f"{image_id}/images/{image_id}.png") as f:
                img = np.asarray(Image.open(f).convert("RGB"))
            masks = sorted(n for n in names if n.startswith(f"{image_id}/masks/") and n.endswith(".png"))
            labels = np.zeros(img.shape[:2], np.int32)
            for k, name in enumerate(masks):
                with zf.open(name) as f:
                    labels[np.asarray(Image.open(f)) > 0] = k + 1
            write_sample(root, image_id, img, labels)
            n_obj += len(masks)
    return n_obj


def perfect_detection(labels: np.ndarray, frame: Frame, cfg: ModelConfig) -> tuple[dict, int]:
    """What a perfect network would output for this image in ``frame``: (detection dict, objects)."""
    lab_in = frame.labels_to_input(labels)
    ids = [i for i in np.unique(lab_in) if i != 0]
    masks = np.stack([lab_in == i for i in ids]) if ids else np.zeros((0, frame.size, frame.size), bool)
    t = build_targets(masks, cfg)
    rois, spans = [], []
    for box, m in zip(inclusive_to_cxcywh(t["boxes"]), t["roi_masks"]):
        levels = roi_levels(box, cfg.roi_enlarge, cfg.min_roi_size)
        if not levels:
            continue
        lv = levels[0]
        rois.append(sample_separable(torch.from_numpy(m), lv.xs(), lv.ys()))
        spans.append(lv.span())
    det = {"scores": torch.ones(len(rois)), "rois": rois,
           "roi_boxes": torch.tensor(np.asarray(spans, np.float64).reshape(-1, 4))}
    return det, len(rois)


def run_path(gt_root: Path, ids: list[str], frame_mode: str, post: PostConfig, size: int, out: Path) -> dict:
    cfg = ModelConfig(backbone="resnet18", pretrained=None)  # only the geometry fields are used
    records, n_det, n_inst = [], 0, 0
    t0 = time.perf_counter()
    for image_id in ids:
        labels = np.asarray(Image.open(gt_root / "labels" / f"{image_id}.png")).astype(np.int32)
        frame = Frame.make(labels.shape[0], labels.shape[1], size, frame_mode)
        det, n = perfect_detection(labels, frame, cfg)
        inst = to_instances(det, frame, post)
        n_det += n
        n_inst += len(inst)
        records += encode_instances(image_id, [Instance(mask=m, score=s, soft_area=a) for m, s, a in inst])
    write_predictions(out, records)
    return {"detections": n_det, "instances": n_inst, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zip", default=ZIP)
    ap.add_argument("--split", default=SPLIT)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--limit", type=int, default=None, help="first N test images only (smoke runs)")
    ap.add_argument("--out", default="benchmarks/results/objguided_ceiling.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ids = [s.strip() for s in Path(args.split).read_text().split() if s.strip()][:args.limit]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt = tmp / "gt"
        n_obj = build_gt(args.zip, ids, gt)
        runs = [("paper", "stretch", PostConfig("paper"), ["binary"]),
                ("code", "stretch", PostConfig("code"), ["soft_area", "binary"]),
                ("code-0.53", "stretch", PostConfig("code", threshold=0.53), ["soft_area", "binary"]),
                ("paper-letterbox", "letterbox", PostConfig("paper"), ["binary"]),
                ("code-letterbox", "letterbox", PostConfig("code"), ["soft_area", "binary"])]
        for name, frame_mode, post, ious in runs:
            pred = tmp / f"{name}.json"
            info = run_path(gt, ids, frame_mode, post, args.size, pred)
            for iou in ious:
                m = score_predictions(gt, pred, box_convention="inclusive", mask_iou=iou, extras=False)
                rows.append({"path": name, "frame": frame_mode, "post": post.faithful_to, "threshold": post.thr,
                             "mask_iou": iou,
                             "ap_seg": 100 * m["ap_seg_mean"], "ap_dec": 100 * m["ap_dec_mean"],
                             "ap_seg_50": 100 * m["ap_seg"][0], "ap_seg_75": 100 * m["ap_seg"][5],
                             "ap_seg_90": 100 * m["ap_seg"][8], "gt_kept": m["counts"]["gt_kept"], **info})
                print(json.dumps(rows[-1]), flush=True)
    cmd = "PYTHONPATH=. .venv/bin/python benchmarks/objguided_ceiling.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    lines = [
        "# ObjGuided: the ceiling each inference path allows (perfect detections, no training)",
        "",
        f"Date: {datetime.date.today().isoformat()}. Command: `{cmd.strip()}`. "
        f"Machine: {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, CPU.",
        "",
        f"Data: DSB2018 stage1_train, the {len(ids)} test ids of `{args.split}`, {n_obj} GT masks "
        f"({rows[0]['gt_kept']} kept by the evaluator's > 2 px rule). Input size {args.size}.",
        "",
        "Perfect detections: each GT object warped nearest into the input frame, reduced by `build_targets` "
        "(largest 4-connected component; objects with x2-x1 > 2 and y2-y1 > 2 in the input frame), its ROI = "
        "that mask sampled bilinearly on the ROI grid of its true box (the network's training target), score 1. "
        "Scored by `score_predictions(..., box_convention=\"inclusive\")` (the paper's protocol: VOC all-point AP "
        "averaged over IoU 0.50:0.05:0.95; APseg mask IoU > t, APdec box IoU >= t on the final masks' tight boxes).",
        "",
        "| path | frame | post-processing | threshold | mask IoU | APseg | APdec | APseg@.5 | APseg@.75 | APseg@.9 "
        "| detections | instances | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['path']} | {r['frame']} | {r['post']} | {r['threshold']:g} | {r['mask_iou']} | "
                     f"{r['ap_seg']:.2f} | {r['ap_dec']:.2f} | {r['ap_seg_50']:.2f} | {r['ap_seg_75']:.2f} | "
                     f"{r['ap_seg_90']:.2f} | {r['detections']} | {r['instances']} | {r['seconds']:.0f} |")
    by = {(r["path"], r["mask_iou"]): r for r in rows}
    pa, cs, cb = by[("paper", "binary")], by[("code", "soft_area")], by[("code", "binary")]
    pl, c53 = by[("paper-letterbox", "binary")], by[("code-0.53", "soft_area")]
    lines += [
        "",
        "Reading (the paper's Table I, DSB2018, Ours W. Refine: APseg 61.25, APdec 50.95, APseg@.5 85.56, "
        "APseg@.75 65.22):",
        "",
        f"- With perfect detections and perfect ROI masks, the paper's path tops out at APseg {pa['ap_seg']:.1f} / "
        f"APdec {pa['ap_dec']:.1f}; the authors' code path at APseg {cb['ap_seg']:.1f} with binary IoU and "
        f"{cs['ap_seg']:.1f} with their soft-area IoU (+{cs['ap_seg'] - cb['ap_seg']:.1f} from the scoring "
        f"convention alone), APdec {cs['ap_dec']:.1f}.",
        f"- The code path's APdec ceiling ({cs['ap_dec']:.1f}) sits well under its APseg ceiling: its boxes are "
        "the tight boxes of the pixels equal to 1 after a bilinear resize (an erosion), and its raw splatting "
        "leaves small objects with holes or drops them. The paper's table shows the same pattern: APdec is 10.3 "
        "points under APseg for Ours on DSB2018, against 0.5-1.6 points for Mask R-CNN, PointRend and Keypoint "
        "Graph, consistent with Ours' numbers coming from this path.",
        f"- Frame: stretching to 512 (the paper's \"resized to 512x512\", and the authors' test code) keeps more "
        f"resolution than letterboxing for non-square and large images (paper post-processing: {pa['ap_seg']:.1f} "
        f"stretched vs {pl['ap_seg']:.1f} letterboxed); the letterbox (`test_resize: letterbox`) is what "
        "training crops match geometrically.",
        f"- Threshold of the code path: {cs['ap_seg']:.1f} APseg (soft-area IoU) at 0.5, the authors' README's "
        f"evaluation value, against {c53['ap_seg']:.1f} at main.py's default 0.53 (APseg@.9 {cs['ap_seg_90']:.1f} "
        f"vs {c53['ap_seg_90']:.1f}). Small here because DSB2018's nuclei are mostly 10 px or more in the 512 frame, "
        "where a perfect ROI's raw splat stays >= 0.81 inside; for objects of 7-9 px (interior about 0.5-0.55) "
        "0.53 cuts holes (tests/test_paper_mends.py).",
        "- Objects lost before any post-processing (detections < GT kept) are those that fall to 3 px or less "
        "in the 512 frame, which `build_targets` does not train on.",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "images": len(ids), "gt_masks": n_obj}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
