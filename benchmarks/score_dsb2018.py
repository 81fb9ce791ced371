"""Benchmark of ``objguided score`` on DSB2018 stage1_train (670 images, 29,461 nuclei).

1. Builds canonical GT (images/<id>.png, labels/<id>.png uint16) from the Kaggle zip in a temp folder.
2. Makes predictions by perturbing the GT, seeded: shifts, erosion, dilation (so predictions overlap),
   merged neighbours, split objects, dropped objects, added false positives, random scores with ties.
3. Times, on the same files:
   (a) ``score_predictions(folder, predictions.json, extras=False)``: the whole CLI-equivalent call,
       reading the label maps and the JSON, masks and boxes at all ten thresholds;
   (b) faster-coco-eval COCOeval_faster evaluate()+accumulate(), segm only, maxDets lifted;
   (c) pycocotools COCOeval evaluate()+accumulate(), segm only, maxDets lifted.
   (b) and (c) get their COCO objects built outside the timed region (loading not timed).

Usage::

    .venv/bin/python benchmarks/score_dsb2018.py [--zip PATH] [--out benchmarks/results/score_dsb2018.json]
        [--workdir DIR] [--skip-pycocotools] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from objguided.data.canonical import write_label_map
from objguided.metrics.coco import export_gt_coco, write_predictions
from objguided.metrics.cocoeval import to_integer_ids
from objguided.metrics.score import score_predictions

ZIP = "/work/shared/data/dsb2018/stage1_train.zip"


def build_gt(zip_path: str, root: Path) -> tuple[int, int]:
    """Canonical dataset from the Kaggle layout <id>/images/<id>.png, <id>/masks/*.png."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    n_img = n_obj = 0
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        by_id: dict[str, dict] = {}
        for n in names:
            parts = n.split("/")
            if len(parts) != 3:
                continue
            entry = by_id.setdefault(parts[0], {"image": None, "masks": []})
            if parts[1] == "images":
                entry["image"] = n
            elif parts[1] == "masks":
                entry["masks"].append(n)
        for image_id, entry in sorted(by_id.items()):
            with zf.open(entry["image"]) as f:
                img = np.asarray(Image.open(f).convert("RGB"))
            labels = np.zeros(img.shape[:2], np.int32)
            for k, mname in enumerate(sorted(entry["masks"])):
                with zf.open(mname) as f:
                    m = np.asarray(Image.open(f)) > 0
                labels[m] = k + 1  # later masks win the few overlapping pixels
            Image.fromarray(img).save(root / "images" / f"{image_id}.png")
            write_label_map(root / "labels" / f"{image_id}.png", labels)
            n_img += 1
            n_obj += len(entry["masks"])
    return n_img, n_obj


def _rle_of(crop: np.ndarray, y0: int, x0: int, h: int, w: int) -> dict:
    """Compressed RLE of a crop placed at (y0, x0) in an HxW image, clipped, without a full-size mask."""
    ch, cw = crop.shape
    i = np.flatnonzero(crop.ravel(order="F"))
    r, c = i % ch + y0, i // ch + x0
    keep = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    idx = c[keep] * h + r[keep]
    if idx.size == 0:
        return None
    heads = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1] + 1)))
    starts = idx[heads]
    lens = np.diff(np.concatenate((heads, [idx.size])))
    ends = starts + lens
    gaps = starts - np.concatenate(([0], ends[:-1]))
    counts = np.stack([gaps, lens], 1).ravel().tolist() + [int(h * w - ends[-1])]
    rle = mask_utils.frPyObjects([{"size": [h, w], "counts": counts}], h, w)[0]
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def make_predictions(root: Path, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    disk = ndimage.generate_binary_structure(2, 1)
    for lp in sorted((root / "labels").glob("*.png")):
        image_id = lp.stem
        labels = np.asarray(Image.open(lp)).astype(np.int32)
        h, w = labels.shape
        slices = ndimage.find_objects(labels)
        used = set()

        def add(crop, y0, x0):
            rle = _rle_of(crop, y0, x0, h, w)
            if rle is not None:
                score = float(np.round(rng.random(), 2))  # two decimals: many ties
                records.append({"image_id": image_id, "category_id": 1, "segmentation": rle, "score": score})

        for lab, sl in enumerate(slices, start=1):
            if sl is None or lab in used:
                continue
            pad = 4
            y0, x0 = max(sl[0].start - pad, 0), max(sl[1].start - pad, 0)
            y1, x1 = min(sl[0].stop + pad, h), min(sl[1].stop + pad, w)
            crop = labels[y0:y1, x0:x1] == lab
            u = rng.random()
            if u < 0.06:  # dropped
                continue
            if u < 0.40:  # shifted by up to 3 px
                dy, dx = rng.integers(-3, 4, 2)
                add(crop, y0 + int(dy), x0 + int(dx))
            elif u < 0.55:
                add(ndimage.binary_erosion(crop, disk, iterations=int(rng.integers(1, 3))), y0, x0)
            elif u < 0.70:
                add(ndimage.binary_dilation(crop, disk, iterations=int(rng.integers(1, 3))), y0, x0)
            elif u < 0.77:  # merged with its neighbour (the label touching it after a 3-px dilation)
                ring = ndimage.binary_dilation(crop, disk, iterations=3)
                nb = set(np.unique(labels[y0:y1, x0:x1][ring]).tolist()) - {0, lab} - used
                if nb:
                    other = min(nb)
                    used.add(other)
                    osl = slices[other - 1]
                    yy0, xx0 = min(y0, osl[0].start), min(x0, osl[1].start)
                    yy1, xx1 = max(y1, osl[0].stop), max(x1, osl[1].stop)
                    sub = labels[yy0:yy1, xx0:xx1]
                    add((sub == lab) | (sub == other), yy0, xx0)
                else:
                    add(crop, y0, x0)
            elif u < 0.84:  # split in two along its longer side
                rows, cols = np.nonzero(crop)
                if rows.size >= 8:
                    if np.ptp(rows) >= np.ptp(cols):
                        cut = rows < np.median(rows)
                    else:
                        cut = cols < np.median(cols)
                    a = np.zeros_like(crop); a[rows[cut], cols[cut]] = True
                    b = np.zeros_like(crop); b[rows[~cut], cols[~cut]] = True
                    add(a, y0, x0)
                    add(b, y0, x0)
                else:
                    add(crop, y0, x0)
            else:  # near perfect
                add(crop, y0, x0)
        # false positives: random ellipses, about 5% of the object count
        for _ in range(rng.poisson(0.05 * len(slices) + 0.5)):
            ry, rx = rng.integers(2, 12, 2)
            yy, xx = np.mgrid[-ry:ry + 1, -rx:rx + 1]
            blob = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1
            add(blob, int(rng.integers(0, h)) - ry, int(rng.integers(0, w)) - rx)
    return records


def time_ours(root: Path, pred: Path, repeat: int) -> tuple[float, dict]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = score_predictions(root, pred, extras=False)
        times.append(time.perf_counter() - t0)
    return min(times), out


def time_coco(backend: str, gt: dict, dets: list[dict], cap: int, repeat: int) -> tuple[float, float, float]:
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    times, load_times, value = [], [], None
    for _ in range(repeat):
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            if backend == "faster-coco-eval":
                cgt = COCO(copy.deepcopy(gt))
            else:
                cgt = COCO()
                cgt.dataset = copy.deepcopy(gt)
                cgt.createIndex()
            cdt = cgt.loadRes(copy.deepcopy(dets))
            ev = COCOeval(cgt, cdt, "segm")
            ev.params.imgIds = sorted(img["id"] for img in gt["images"])
            ev.params.maxDets = [1, 10, cap]
            t1 = time.perf_counter()
            ev.evaluate()
            ev.accumulate()
            t2 = time.perf_counter()
        times.append(t2 - t1)
        load_times.append(t1 - t0)
        prec = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
        value = float(np.mean(prec[prec > -1]))
    return min(times), min(load_times), value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zip", default=ZIP)
    ap.add_argument("--out", default="benchmarks/results/score_dsb2018.json")
    ap.add_argument("--workdir", default=None, help="keep the built data here (default: a temp folder)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per tool; the minimum is reported")
    ap.add_argument("--skip-pycocotools", action="store_true")
    args = ap.parse_args(argv)

    tmp = None
    if args.workdir:
        work = Path(args.workdir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="score_dsb2018_")
        work = Path(tmp.name)
    root, pred = work / "dsb2018", work / "predictions.json"
    t0 = time.perf_counter()
    if not (root / "labels").is_dir():
        n_img, n_obj = build_gt(args.zip, root)
        print(f"built GT: {n_img} images, {n_obj} masks ({time.perf_counter() - t0:.1f} s)", flush=True)
    if not pred.is_file():
        write_predictions(pred, make_predictions(root))
    records = json.loads(pred.read_text())
    print(f"{len(records)} predictions", flush=True)
    gt = export_gt_coco(root, work / "gt_coco.json")
    gt_int, dets, cap = to_integer_ids(gt, records)
    print(f"GT: {len(gt['images'])} images, {len(gt['annotations'])} objects; maxDets cap {cap}", flush=True)

    # interleaved, minimum over repeats: the 2-core machine is shared, so single runs are noisy
    load_start = os.getloadavg()[0]
    ours_all, fce_all, fce_load_all = [], [], []
    for r in range(args.repeat):
        t, m = time_ours(root, pred, 1)
        ours_all.append(t)
        tf, lf, v_fce = time_coco("faster-coco-eval", gt_int, dets, cap, 1)
        fce_all.append(tf)
        fce_load_all.append(lf)
        print(f"  repeat {r}: ours {t:.3f} s, faster-coco-eval {tf:.3f} s (+{lf:.2f} s loading)", flush=True)
    t_ours, t_fce, l_fce = min(ours_all), min(fce_all), min(fce_load_all)
    print(f"(a) objguided score: {t_ours:.3f} s  APseg {m['ap_seg_mean']:.4f} APdec {m['ap_dec_mean']:.4f}", flush=True)
    print(f"(b) faster-coco-eval: {t_fce:.3f} s (+ {l_fce:.2f} s loading)  COCO AP {v_fce:.4f}", flush=True)
    m_px = score_predictions(root, pred, box_convention="pixel_extent", extras=False)
    m_extra = score_predictions(root, pred, extras=True)
    res = {
        "loadavg_1min_before_pycocotools": os.getloadavg()[0],
        "loadavg_1min_at_start": load_start,
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, no GPU",
        "python": sys.version.split()[0],
        "command": " ".join([".venv/bin/python", "benchmarks/score_dsb2018.py", *(argv if argv is not None else sys.argv[1:])]),
        "threads_ours": None,
        "images": len(gt["images"]), "gt_objects": len(gt["annotations"]), "predictions": len(records),
        "max_dets_cap": cap, "repeat": args.repeat, "timing": "minimum over repeats",
        "ours_s": t_ours, "faster_coco_eval_s": t_fce, "faster_coco_eval_load_s": l_fce,
        "ours_s_all": ours_all, "faster_coco_eval_s_all": fce_all,
        "ours_extra": m_extra["extra"],
        "ours": {k: m[k] for k in ("ap_seg_mean", "ap_dec_mean", "ap_seg_50", "ap_seg_75", "ap_seg", "ap_dec")},
        "ours_counts": m["counts"],
        "ap_dec_mean_pixel_extent": m_px["ap_dec_mean"],
        "ap_dec_mean_inclusive_minus_pixel_extent": m["ap_dec_mean"] - m_px["ap_dec_mean"],
        "ap_seg_mean_pixel_extent": m_px["ap_seg_mean"],
        "coco_ap_seg_faster_coco_eval": v_fce,
        "ratio_fce_over_ours": t_fce / t_ours,
    }
    from objguided.metrics.score import _threads
    res["threads_ours"] = _threads()
    if not args.skip_pycocotools:
        t_pc, l_pc, v_pc = time_coco("pycocotools", gt_int, dets, cap, 1)
        print(f"(c) pycocotools: {t_pc:.3f} s (+ {l_pc:.2f} s loading)  COCO AP {v_pc:.4f}", flush=True)
        res.update({"pycocotools_s": t_pc, "pycocotools_load_s": l_pc, "pycocotools_repeat": 1,
                    "coco_ap_seg_pycocotools": v_pc, "ratio_pycocotools_over_ours": t_pc / t_ours})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, (dict, list))}, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
