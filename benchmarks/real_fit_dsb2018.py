"""Real images, not only synthetic: can each learned method fit 8 real DSB2018 training images on a CPU?

Every learned method (``objguided methods``; the peers Cellpose and StarDist when installed) trains from
scratch on 8 images of the real archive (``stage1_train.zip``) and is scored on those same 8 images with
the paper's protocol (APseg@0.5 through ``score_predictions``). The goal: APseg@0.5 >= 0.7 within 10
minutes of CPU process time per method. Training runs in rounds of growing length (each round resumes
the previous one's checkpoint where the method resumes, else retrains), scored after each round, and
stops at the goal or when the next round would pass the CPU budget.

The images: the first 8 ids of the paper's train list (``/work/shared/splits/dsb2018/train.txt``, file
order) whose image is 256 x 256, the archive's most common size, so that one CPU-sized network input
fits them all without rescaling. They are converted by the project's own DSB2018 converter.

CPU time is process time (``resource.getrusage`` of the method's own child process: every thread,
user + system), not wall time, because the machine is shared. One torch thread per method.

Usage (one command; results merged per method into the .json, the .md rebuilt from it)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/real_fit_dsb2018.py \\
        [--methods objguided,dcan,...] [--minutes 10] [--work /tmp/real_fit_dsb2018] \\
        [--out benchmarks/results/real_fit_dsb2018.md]
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ZIP = "/work/shared/data/dsb2018/stage1_train.zip"
TRAIN_LIST = "/work/shared/splits/dsb2018/train.txt"
GOAL = 0.7
SIZE = 256

#: CPU-scale fitting schedules: small widths, ResNet-18 from scratch (no weights can be downloaded here),
#: no augmentation where the method allows it (the check asks for fitting these very images). ``knob`` is
#: the parameter a round raises; ``rounds`` its values; ``resumes``: a longer round continues the last.
FIT = {
    "objguided": {"params": {"backbone": "resnet18", "pretrained": None, "num_workers": 0, "input_size": SIZE,
                             "batch_size": 4, "lr": 2e-3, "epochs": 100000, "augment": False, "log_every": 20,
                             "head_width": 64},
                  "knob": "max_steps", "rounds": [20, 40, 80, 140, 220, 320, 450], "resumes": True},
    "dcan": {"params": {"width": 8, "batch_norm": True, "input_size": SIZE, "batch_size": 4, "lr": 3e-3,
                        "aux_decay_every": 0, "progress": False, "log_every": 20, "tune_on": "none"},
             "knob": "max_steps", "rounds": [50, 100, 200, 400, 700, 1100], "resumes": True},
    "cosine_embedding": {"params": {"levels": 4, "filters": 16, "input_size": 128, "batch_size": 4, "lr": 2e-3,
                                    "progress": False, "log_every": 20, "tune_on": "none"},
                         "knob": "max_steps", "rounds": [50, 100, 200, 400, 700, 1100], "resumes": True},
    "mask_rcnn": {"params": {"backbone": "resnet18", "pretrained": "none", "num_workers": 0, "input_size": SIZE,
                             "batch_size": 2, "lr": 1e-3, "augment": False, "fpn_channels": 64,
                             "box_head_dim": 256, "mask_head_dim": 64, "box_batch_size_per_image": 128,
                             "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 600,
                             "smallest_anchor": 16, "log_every": 10},
                  "knob": "max_steps", "rounds": [20, 40, 80, 160, 300, 500, 800], "resumes": True},
    "pointrend": {"params": {"backbone": "resnet18", "pretrained": "none", "num_workers": 0, "input_size": SIZE,
                             "batch_size": 2, "lr": 1e-3, "augment": False, "fpn_channels": 64,
                             "box_head_dim": 256, "coarse_fc_dim": 256, "point_fc_dim": 64,
                             "box_batch_size_per_image": 128, "rpn_pre_nms_top_n_train": 600,
                             "rpn_post_nms_top_n_train": 600, "smallest_anchor": 16, "log_every": 10},
                  "knob": "max_steps", "rounds": [20, 40, 80, 160, 300, 500, 800], "resumes": True},
    "keypoint_graph": {"params": {"backbone": "resnet18", "pretrained": None, "num_workers": 0, "input_size": SIZE,
                                  "batch_size": 2, "lr": 1e-3, "epochs": 100000, "head_kernel": 3,
                                  "head_width": 32, "augment": False, "log_every": 10},
                       "knob": "max_steps", "rounds": [20, 40, 80, 160, 300, 450], "resumes": True},
    "cellpose": {"params": {"batch_size": 2, "learning_rate": 0.01, "diam_mean": 17.0, "bsize": 128,
                            "min_train_masks": 1},
                 "knob": "epochs", "rounds": [50, 100, 200, 400], "resumes": False},
    "stardist": {"params": {"n_rays": 32, "grid": 2, "unet_n_depth": 2, "unet_n_filter_base": 16,
                            "patch_size": 128, "batch_size": 4, "steps_per_epoch": 10, "learning_rate": 3e-3,
                            "tune_thresholds": False},
                 "knob": "epochs", "rounds": [10, 20, 40, 80], "resumes": False},
}
#: the peers run only where their packages are installed (the ``peers`` extra)
PEERS = {"cellpose": "cellpose", "stardist": "stardist"}


def cpu_seconds() -> float:
    """Process time of this process and its waited-for children (every thread, user + system)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pick_ids(zip_path: str, train_list: str, n: int) -> list[str]:
    """The first ``n`` ids of the train list whose image is SIZE x SIZE (the image header only is read)."""
    from PIL import Image

    ids = [s.strip() for s in Path(train_list).read_text().split() if s.strip()]
    chosen = []
    with zipfile.ZipFile(zip_path) as zf:
        for image_id in ids:
            with zf.open(f"{image_id}/images/{image_id}.png") as f:
                if Image.open(f).size == (SIZE, SIZE):
                    chosen.append(image_id)
            if len(chosen) == n:
                return chosen
    raise SystemExit(f"{train_list}: only {len(chosen)} ids of {SIZE}x{SIZE} images; need {n}")


def make_data(zip_path: str, ids: list[str], root: Path) -> Path:
    """Canonical folder of ``ids`` made by the project's DSB2018 converter, and a split with all of them in
    train (they are scored as ``train``: this checks fitting, not generalisation; nothing tunes on val)."""
    from objguided.data.canonical import write_manifest
    from objguided.data.sources.dsb2018 import convert_tasks, open_archive_index

    split = root / "split.json"
    if split.is_file() and json.loads(split.read_text())["train"] == ids:
        return root
    archive = Path(zip_path)
    index = open_archive_index(archive, masks=True)
    tasks = [(i, index[i]["image"], index[i]["masks"]) for i in ids]
    info = convert_tasks(tasks, archive, root, 1, {"source": "dsb2018", "archive": str(archive)})
    write_manifest(root, info)
    split.write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "real_fit_dsb2018"}))
    return root


def fit_one(method: str, data: Path, work: Path, budget_s: float) -> dict:
    """Rounds of training + scoring one method (in this process); the record of the table row."""
    import torch

    from objguided.engine.run import predict_run, train_run
    from objguided.metrics.score import score_predictions

    torch.set_num_threads(1)
    spec = FIT[method]
    run_dir = work / "runs" / method
    rounds, train_cpu, eval_cpu, per_unit = [], 0.0, 0.0, 0.0
    for value in spec["rounds"]:
        done = rounds[-1]["value"] if rounds and spec["resumes"] else 0
        if (train_cpu if spec["resumes"] else 0.0) + per_unit * (value - done) > budget_s:
            break  # the next round (estimated from the last one's CPU per step) would pass the budget
        params = {**spec["params"], spec["knob"]: value}
        out = run_dir / (f"{spec['knob']}{value}" if not spec["resumes"] else "run") / "model.pt"
        t0 = cpu_seconds()
        train_run(method, "real_fit", params, data, data / "split.json", 0, out, "cpu")
        t1 = cpu_seconds()
        pred = out.parent / f"pred_{value}.json"
        predict_run(out, data, data / "split.json", "train", pred, "cpu")
        metrics = score_predictions(data, pred, split_path=data / "split.json", subset="train", extras=False)
        t2 = cpu_seconds()
        progress = out.parent / "train_progress.json"
        if spec["resumes"] and progress.is_file():
            # the shared trainer's own process-CPU clock, summed over every job of the run (a killed and
            # resumed benchmark keeps the earlier jobs' training time)
            before, train_cpu = train_cpu, float(json.loads(progress.read_text())["compute_seconds"])
            per_unit = (train_cpu - before) / max(1, value - done)
        else:
            per_unit = (t1 - t0) / (value - done)
            train_cpu = train_cpu + (t1 - t0) if spec["resumes"] else t1 - t0
        eval_cpu += t2 - t1
        rounds.append({"value": value, "train_cpu_s": round(train_cpu, 1), "eval_cpu_s": round(t2 - t1, 1),
                       "ap_seg_50": float(metrics["ap_seg"][0]), "ap_seg": float(metrics["ap_seg_mean"])})
        print(json.dumps({"method": method, **rounds[-1]}), flush=True)
        if rounds[-1]["ap_seg_50"] >= GOAL:
            break
    best = max(rounds, key=lambda r: r["ap_seg_50"]) if rounds else None
    reached = next((r for r in rounds if r["ap_seg_50"] >= GOAL), None)
    return {"method": method, "knob": spec["knob"], "params": spec["params"], "resumes": spec["resumes"],
            "rounds": rounds, "reached": reached is not None, "final": reached or best,
            "eval_cpu_s": round(eval_cpu, 1), "budget_cpu_s": budget_s,
            "date": datetime.date.today().isoformat(), "threads": torch.get_num_threads()}


def merge(json_path: Path, record: dict) -> dict:
    """Add one method's record to the results file (several invocations may run side by side)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "real_fit_dsb2018.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(json_path.read_text()) if json_path.is_file() else {}
        results.setdefault("methods", {})[record["method"]] = record
        json_path.write_text(json.dumps(results, indent=1))
    return results


def logged_rounds(log: Path, method: str) -> dict:
    """The record of a method still training (or cut off): the rounds its log holds so far."""
    rounds = []
    for line in re.split(r"[\r\n]", log.read_text(errors="replace")):
        if line.startswith("{") and f'"method": "{method}"' in line:
            row = json.loads(line)
            rounds.append({k: v for k, v in row.items() if k != "method"})
    spec = FIT[method]
    best = max(rounds, key=lambda r: r["ap_seg_50"]) if rounds else None
    reached = next((r for r in rounds if r["ap_seg_50"] >= GOAL), None)
    return {"method": method, "knob": spec["knob"], "params": spec["params"], "resumes": spec["resumes"],
            "rounds": rounds, "reached": reached is not None, "final": reached or best, "in_progress": True,
            "eval_cpu_s": round(sum(r["eval_cpu_s"] for r in rounds), 1), "budget_cpu_s": None,
            "date": datetime.date.today().isoformat()}


def render(results: dict, ids: list[str], objects: dict, minutes: float) -> str:
    lines = [
        "# Real images: each learned method fits 8 DSB2018 training images on a CPU",
        "",
        "Command: `OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/real_fit_dsb2018.py "
        f"--minutes {minutes:g}` "
        f"(one method: `--methods NAME`). Machine: {platform.machine()}, {os.cpu_count()} cores shared with other "
        f"jobs, Python {platform.python_version()}; one torch thread per method.",
        "",
        f"Data: `{ZIP}` (the real archive), converted by the project's DSB2018 converter; the first 8 ids of "
        f"`{TRAIN_LIST}` whose image is {SIZE}x{SIZE}: " + ", ".join(f"`{i[:10]}` ({objects.get(i, '?')})" for i in ids)
        + " (nuclei per image in brackets). Trained from scratch on them, scored on the same 8 images "
        "(`score_predictions`, the paper's protocol; APseg@0.5 = mask IoU > 0.5).",
        "",
        f"Goal: APseg@0.5 >= {GOAL} within {minutes:g} minutes of CPU process time (user + system of the "
        "method's own process, all threads; not wall time). Training runs in rounds of growing length, each "
        "scored; `steps` is the length of the round that reached the goal (or the best round). `train CPU min` "
        "is the training CPU up to that round (resumed rounds add up; methods that cannot resume retrain, and the "
        "round's own run is counted); scoring rounds cost `eval CPU min` on top, which is the check's, not the "
        "method's.",
        "",
        "| method | schedule | steps | train CPU min | APseg@0.5 | APseg | goal met | eval CPU min "
        "| rounds (steps: APseg@0.5) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in FIT:
        rec = results.get("methods", {}).get(name)
        if rec is None:
            lines.append(f"| {name} | not run | | | | | | | |")
            continue
        if rec.get("skipped"):
            lines.append(f"| {name} | {rec['skipped']} | | | | | | | |")
            continue
        fin = rec["final"]
        sched = ", ".join(f"{k} {v}" for k, v in rec["params"].items()
                          if k in ("backbone", "input_size", "batch_size", "lr", "learning_rate", "width", "filters",
                                   "head_width", "patch_size", "bsize", "steps_per_epoch"))
        trail = "; ".join(f"{r['value']}: {r['ap_seg_50']:.3f}" for r in rec["rounds"])
        met = "yes" if rec["reached"] else ("not yet: cut off (see below)" if rec.get("in_progress") else "**no**")
        lines.append(f"| {name} | {sched} | {rec['knob']} {fin['value']} | {fin['train_cpu_s'] / 60:.1f} | "
                     f"{fin['ap_seg_50']:.3f} | {fin['ap_seg']:.3f} | {met} | "
                     f"{rec['eval_cpu_s'] / 60:.1f} | {trail} |")
    if any(r.get("in_progress") for r in results.get("methods", {}).values()):
        lines += ["", "Rows marked *cut off* hold the rounds a method had finished when this table was written "
                  "(`--collect`) while it was still training: it had not used its CPU budget, so they are a lower "
                  "bound of what it reaches, not a failure to reach the goal."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(FIT), help="comma-separated (default: every learned method)")
    ap.add_argument("--minutes", type=float, default=10.0, help="CPU minutes per method")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--zip", default=ZIP)
    ap.add_argument("--work", default="/tmp/real_fit_dsb2018")
    ap.add_argument("--out", default="benchmarks/results/real_fit_dsb2018.md")
    ap.add_argument("--collect", action="store_true",
                    help="train nothing: add the rounds logged so far by unfinished methods (marked so) "
                         "and rewrite the table")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: fit this method in this process
    args = ap.parse_args(argv)
    work = Path(args.work)
    data = work / "data"
    if args.one:
        print("RESULT " + json.dumps(fit_one(args.one, data, work, args.minutes * 60)), flush=True)
        return 0
    ids = pick_ids(args.zip, TRAIN_LIST, args.images)
    make_data(args.zip, ids, data)
    objects = json.loads((data / "manifest.json").read_text()).get("objects_per_image", {})
    out = Path(args.out)
    results = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    for name in [m for m in args.methods.split(",") if m] if not args.collect else []:
        if name not in FIT:
            raise SystemExit(f"--methods: {name!r} is not a learned method here; expected some of {', '.join(FIT)}")
        if name in PEERS:
            try:
                __import__(PEERS[name])
            except ImportError:
                results = merge(out.with_suffix(".json"), {"method": name, "skipped": "not installed (peers extra)"})
                continue
        # each method in its own process: its CPU time is its own, and a crash costs one row
        log = work / f"{name}.log"  # the method's own log, readable while it runs
        with open(log, "w") as f:
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--minutes", str(args.minutes),
                                   "--work", str(work)], stdout=f, stderr=subprocess.STDOUT, text=True)
        lines = log.read_text().splitlines()
        found = [line[7:] for line in lines if line.startswith("RESULT ")]
        if proc.returncode != 0 or not found:
            record = {"method": name, "skipped": f"failed: {(lines or ['no output'])[-1][:200]} (see {log})"}
        else:
            record = json.loads(found[-1])
        results = merge(out.with_suffix(".json"), record)
        results["ids"], results["objects"] = ids, objects
        out.write_text(render(results, ids, objects, args.minutes))
    results = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else results
    if args.collect:
        done = results.get("methods", {})
        partial = {name: logged_rounds(work / f"{name}.log", name) for name in FIT
                   if (name not in done or done[name].get("in_progress")) and (work / f"{name}.log").is_file()}
        for record in partial.values():
            if record["rounds"]:
                results = merge(out.with_suffix(".json"), record)
    out.write_text(render(results, ids, objects, args.minutes))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
