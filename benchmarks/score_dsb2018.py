"""Benchmark of ``objguided score`` on DSB2018 stage1_train (670 images, 29,461 nuclei), whole processes.

1. Builds canonical GT (images/<id>.png, labels/<id>.png uint16) from the Kaggle zip in a work folder.
2. Makes predictions by perturbing the GT, seeded: shifts, erosion, dilation (so predictions overlap),
   merged neighbours, split objects, dropped objects, added false positives, random scores with ties.
   Writes the GT and the predictions as COCO JSON with integer ids for the COCO tools (untimed: they
   cannot read label maps).
3. Times whole processes (start, imports, reading the files, scoring, exit), interleaved round by round
   (ours, faster-coco-eval, pycocotools, ours, ...) so that the shared machine's load hits all alike, each
   preceded by ``uptime``; the children inherit this script's nice level:
   (a) ``objguided score`` with its defaults: the paper's APseg/APdec plus COCO mask AP, the DSB2018 score
       and the CTC / CVPPP measures; reads 670 label-map PNGs and the predictions JSON;
   (b) faster-coco-eval: reads the two COCO JSONs, builds COCO, loadRes, evaluate()+accumulate(), segm,
       maxDets lifted (the child also reports its in-process evaluate()+accumulate() time);
   (c) pycocotools, the same.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python benchmarks/score_dsb2018.py [--zip PATH] [--workdir DIR] [--repeat N]
        [--skip-pycocotools] [--out benchmarks/results/score_dsb2018.json] [--md benchmarks/results/score_dsb2018.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import resource
import statistics
import subprocess
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
                    a, b = np.zeros_like(crop), np.zeros_like(crop)
                    a[rows[cut], cols[cut]] = True
                    b[rows[~cut], cols[~cut]] = True
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



def coco_child(backend: str, gt_path: str, dets_path: str, cap: int, out: str) -> int:
    """The timed COCO process: read both JSONs, build COCO, evaluate, accumulate; write AP and timings."""
    t0 = time.perf_counter()
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    gt = json.loads(Path(gt_path).read_text())
    dets = json.loads(Path(dets_path).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "faster-coco-eval":
            cgt = COCO(gt)
        else:
            cgt = COCO()
            cgt.dataset = gt
            cgt.createIndex()
        ev = COCOeval(cgt, cgt.loadRes(dets), "segm")
        ev.params.imgIds = sorted(img["id"] for img in gt["images"])
        ev.params.maxDets = [1, 10, cap]
        t1 = time.perf_counter()
        ev.evaluate()
        ev.accumulate()
        t2 = time.perf_counter()
    prec = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
    Path(out).write_text(json.dumps({"coco_ap_seg": float(np.mean(prec[prec > -1])), "evaluate_s": t2 - t1,
                                     "in_process_s": t2 - t0}))
    return 0


def _timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, child CPU seconds, `uptime` just before) of one whole process."""
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, load


def run_rounds(work: Path, root: Path, pred: Path, cap: int, repeat: int, tools: list[str]) -> dict:
    """Interleaved rounds of whole processes; returns per tool the list of runs."""
    objguided = str(Path(sys.executable).with_name("objguided"))
    cmds = {"ours": [objguided, "score", "--gt", str(root), "--pred", str(pred), "--out", str(work / "metrics.json")]}
    for tool in ("faster-coco-eval", "pycocotools"):
        cmds[tool] = [sys.executable, __file__, "--coco-child", tool, str(work / "gt_coco_int.json"),
                      str(work / "dets_int.json"), str(cap), str(work / f"{tool}.json")]
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(repeat):
        for tool in tools:
            wall, cpu, load = _timed(cmds[tool])
            run = {"round": r, "wall_s": wall, "cpu_s": cpu, "uptime": load}
            if tool != "ours":
                child = json.loads((work / f"{tool}.json").read_text())
                run.update(evaluate_s=child["evaluate_s"], coco_ap_seg=child["coco_ap_seg"])
            runs[tool].append(run)
            print(f"round {r} {tool:>16}: {wall:.3f} s wall, {cpu:.3f} s CPU  [{load}]", flush=True)
    return runs


def prepare(args) -> tuple[Path, Path, Path, dict]:
    """The work folder with the GT label maps, the predictions and the COCO tools' integer-id JSONs."""
    work = Path(args.workdir)
    root, pred = work / "dsb2018", work / "predictions.json"
    if not (root / "labels").is_dir():
        t0 = time.perf_counter()
        n_img, n_obj = build_gt(args.zip, root)
        print(f"built GT: {n_img} images, {n_obj} masks ({time.perf_counter() - t0:.1f} s)", flush=True)
    if not pred.is_file():
        write_predictions(pred, make_predictions(root))
    records = json.loads(pred.read_text())
    gt = export_gt_coco(root, work / "gt_coco.json")
    gt_int, dets, cap = to_integer_ids(gt, records)
    (work / "gt_coco_int.json").write_text(json.dumps(gt_int))
    (work / "dets_int.json").write_text(json.dumps(dets))
    data = {"images": len(gt["images"]), "gt_objects": len(gt["annotations"]), "predictions": len(records),
            "max_dets_cap": cap}
    print(f"GT: {data['images']} images, {data['gt_objects']} objects, {data['predictions']} predictions; "
          f"maxDets cap {cap}", flush=True)
    return work, root, pred, data


def summarise_runs(runs: dict) -> dict:
    out = {}
    for tool, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        out[tool] = {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
                     "median_cpu_s": statistics.median(r["cpu_s"] for r in rs)}
        if tool != "ours":
            out[tool]["median_evaluate_s"] = statistics.median(r["evaluate_s"] for r in rs)
    return out


def _margin(r: dict) -> str:
    """How robust the verdict is: rounds won and the CPU time, which load disturbs less than wall time."""
    ours, fce = r["runs"]["ours"], r["runs"]["faster-coco-eval"]
    won = sum(a["wall_s"] <= b["wall_s"] for a, b in zip(ours, fce))
    cpu_o, cpu_f = r["summary"]["ours"]["median_cpu_s"], r["summary"]["faster-coco-eval"]["median_cpu_s"]
    return (f"Ours was the faster of the two in {won} of {len(ours)} rounds; median CPU time {cpu_o:.3f} s (ours, "
            f"its worker processes included) vs {cpu_f:.3f} s ({100 * (cpu_o / cpu_f - 1):+.1f}%): on CPU time the "
            "two are level, so on a loaded machine either may come out ahead in a single run.")


def report(r: dict, json_path: str) -> str:
    s, o = r["summary"], r["ours_metrics"]
    label = {"ours": "(a) `objguided score`, defaults (APseg, APdec, COCO AP, DSB score, CTC, CVPPP)",
             "faster-coco-eval": f"(b) faster-coco-eval {r['faster_coco_eval_version']}: COCO segm AP only",
             "pycocotools": "(c) pycocotools: COCO segm AP only"}
    rows = [f"| {label[t]} | {v['median_s']:.3f} s | {v['min_s']:.3f}-{v['max_s']:.3f} s | {v['median_cpu_s']:.3f} s | "
            + (f"{v['median_evaluate_s']:.3f} s |" if "median_evaluate_s" in v else "- |")
            + f" {v['median_s'] / s['ours']['median_s']:.2f}x |" for t, v in s.items()]
    per_round = [f"| {run['round']} | {t} | {run['wall_s']:.3f} | {run['cpu_s']:.3f} | `{run['uptime']}` |"
                 for t, rs in r["runs"].items() for run in rs]
    per_round.sort(key=lambda line: (int(line.split("|")[1]), list(s).index(line.split("|")[2].strip())))
    fce = s["faster-coco-eval"]["median_s"]
    coco = [f"ours {o['coco_ap_seg']:.9f}"] + [f"{t} {r['runs'][t][-1]['coco_ap_seg']:.9f}" for t in s if t != "ours"]
    return "\n".join([
        "# Benchmark: `objguided score` on DSB2018 stage1_train, whole processes",
        "",
        f"- Date: {r['date']}; machine: {r['machine']}, shared with other engineers' jobs (load before each run "
        f"in the per-run table); nice level {r['nice']}; Python {r['python']}.",
        f"- Command: `{r['command']}` (from the repository root; raw numbers in `{json_path}`).",
        f"- Data: {r['images']} images, {r['gt_objects']} GT nuclei (label maps built from the Kaggle zip), "
        f"{r['predictions']} predictions made by perturbing the GT (seeded; scores rounded to 2 decimals, so many "
        f"ties); COCO maxDets lifted to {r['max_dets_cap']}.",
        f"- Each figure is one whole process: start, imports, reading the files, scoring, exit. {r['repeat']} "
        "interleaved rounds (ours, faster-coco-eval, pycocotools). Ours reads the 670 label-map PNGs and the "
        "predictions JSON; the COCO tools read a GT COCO JSON made from the same label maps beforehand (untimed). "
        f"Ours runs {r['threads_ours']} worker processes (`OBJGUIDED_THREADS`/`OMP_NUM_THREADS`, default: the "
        "CPU count); the COCO tools their defaults.",
        "",
        "| process | median wall | range | median CPU | its evaluate()+accumulate() alone | vs ours |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Goal (#21): the default `objguided score` no slower than faster-coco-eval on this case, whole process: "
        f"**{'met' if s['ours']['median_s'] <= fce else 'NOT met'}** (median {s['ours']['median_s']:.3f} s vs "
        f"{fce:.3f} s). {_margin(r)}",
        "",
        "## Every run",
        "",
        "| round | process | wall s | CPU s | `uptime` before |",
        "|---|---|---|---|---|",
        *per_round,
        "",
        "## Numbers (sanity)",
        "",
        f"- COCO mask AP@[.5:.95]: {', '.join(coco)}.",
        f"- Ours: APseg mean {o['ap_seg_mean']:.4f}, APdec mean {o['ap_dec_mean']:.4f}, DSB score "
        f"{o['dsb_score']:.4f}, CTC SEG {o['ctc_seg']:.4f} / DET {o['ctc_det']:.4f}, CVPPP bestDice "
        f"{o['best_dice']:.4f}.",
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zip", default=ZIP)
    ap.add_argument("--out", default="benchmarks/results/score_dsb2018.json")
    ap.add_argument("--md", default="benchmarks/results/score_dsb2018.md", help="the human-readable report")
    ap.add_argument("--workdir", default=None, help="keep the built data here (default: a temp folder)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--skip-pycocotools", action="store_true")
    ap.add_argument("--coco-child", nargs=5, metavar=("TOOL", "GT", "DETS", "CAP", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.coco_child:
        tool, gt, dets, cap, out = args.coco_child
        return coco_child(tool, gt, dets, int(cap), out)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="score_dsb2018_")
        args.workdir = tmp.name
    work, root, pred, data = prepare(args)
    tools = ["ours", "faster-coco-eval"] + ([] if args.skip_pycocotools else ["pycocotools"])
    runs = run_rounds(work, root, pred, data["max_dets_cap"], args.repeat, tools)
    m = json.loads((work / "metrics.json").read_text())
    from objguided.metrics.decode import threads

    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, no GPU",
        "python": sys.version.split()[0], "nice": os.nice(0), "threads_ours": threads(),
        "command": " ".join(["OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python", "benchmarks/score_dsb2018.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        **data, "repeat": args.repeat, "faster_coco_eval_version": __import__("faster_coco_eval").__version__,
        "runs": runs, "summary": summarise_runs(runs),
        "ours_metrics": {"ap_seg_mean": m["ap_seg_mean"], "ap_dec_mean": m["ap_dec_mean"],
                         "coco_ap_seg": m["extra"]["coco_ap_seg"], "dsb_score": m["extra"]["dsb_score"],
                         "ctc_seg": m["quality"]["ctc"]["seg"], "ctc_det": m["quality"]["ctc"]["det"],
                         "best_dice": m["quality"]["cvppp"]["best_dice"]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(report(res, args.out))
    print(json.dumps(res["summary"], indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
