"""CPU seconds per 512x512 image, batch 1, whole inference: Cellpose 3 and StarDist beside Ours and Mask R-CNN.

    python benchmarks/peers_cpu.py                      # appends to benchmarks/results/peers_cpu.md
    python benchmarks/peers_cpu.py --images 3 --threads 2 --detections 100

Needs the peers extra (``pip install -e .[peers]``). All four run through their methods' own inference
path, one process, on the same synthetic 512x512 nuclei images, timed alternately image by image (first
image dropped), like benchmarks/cpu_speed.py and benchmarks/box_baselines_cpu.py, whose builders are
reused here:

- **Ours** (ResNet-50, W. Refine) and **Mask R-CNN** (R50-FPN): untrained reference networks with forced,
  realistic detection counts (``--detections``): ``cpu_speed.forced_ours`` and
  ``box_baselines_cpu.predictor`` (see their docstrings).
- **Cellpose 3** and **StarDist**: the packages' reference networks (Cellpose's 4-level ``CPnet``, 32-256
  features; StarDist2D's default U-net, 32 rays, grid 2 -- the architecture of ``2D_versatile_fluo``),
  which cost what they find: their post-processing (flow dynamics; polygon NMS and rendering) depends on
  the objects detected, and an untrained network detects none. So each is first trained briefly on
  128x128 synthetic nuclei (``--train-seconds`` worth of the learning tests' schedules; the time is
  printed), which is enough for them to find most nuclei, then timed through ``methods.cellpose.predict``
  and ``methods.stardist.predict``. Cellpose resizes each image by ``diam_mean / diameter`` before its
  network: ``--diam-mean 17`` (its ``nuclei`` model's) against the train nuclei's mean diameter.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):  # the package, and the sibling benchmarks whose builders are reused
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def _dataset(root: Path, n: int, size: int, seed: int):
    from objguided.data.canonical import CanonicalDataset, write_sample
    from objguided.data.synthetic import generate

    ids = []
    for image_id, image, labels in generate("nuclei", n, size, seed):
        write_sample(root, image_id, image, labels)
        ids.append(image_id)
    (root / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "seeded",
                                                 "seed": seed}))
    return CanonicalDataset(root, "train")


def trained_peer(name: str, params: dict, train_set, workdir: Path):
    """(predictor image -> instances, seconds spent training) for a briefly trained ``name``."""
    import objguided_methods as methods

    method = methods.get(name)
    cfg = method.make_config(params)
    np.random.seed(0)
    started = time.perf_counter()
    state = method.train(train_set, train_set, cfg, workdir / name, "cpu")
    seconds = time.perf_counter() - started
    if name == "cellpose":
        from objguided_methods.cellpose import load_model, predict_with

        model = load_model(state, "cpu")
        return (lambda image: next(predict_with(model, [image], cfg, state["diam_labels"]))), seconds, state
    from objguided_methods.stardist import load_model, predict_with

    model = load_model(state)
    return (lambda image: next(predict_with(model, [image], cfg, state["thresholds"]))), seconds, state


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("torch", "cellpose", "stardist", "csbdeep", "tensorflow-cpu", "tensorflow", "keras", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3, help="images timed per method (+1 dropped)")
    ap.add_argument("--detections", type=int, default=100, help="forced detections of Ours / Mask R-CNN")
    ap.add_argument("--threads", type=int, default=None, help="torch and TensorFlow threads (default: theirs)")
    ap.add_argument("--diam-mean", type=float, default=17.0, help="Cellpose diam_mean (17: its nuclei model)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "peers_cpu.md"))
    args = ap.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # methods.stardist gives TensorFlow the same
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from box_baselines_cpu import predictor as box_predictor
    from cpu_speed import append_section, forced_ours, time_alternately

    from objguided.data.synthetic import generate

    work = Path(tempfile.mkdtemp(prefix="peers-cpu-"))
    train_set = _dataset(work / "train", 6, 128, seed=1)
    peers = {}
    # cellpose first: its optimizer loads torch's triton before TensorFlow (see methods/stardist.py)
    cp, cp_s, cp_state = trained_peer("cellpose", {"epochs": 70, "batch_size": 2, "learning_rate": 0.01,
                                                   "diam_mean": args.diam_mean, "bsize": 96, "min_train_masks": 1},
                                      train_set, work)
    sd, sd_s, sd_state = trained_peer("stardist", {"patch_size": 128, "batch_size": 4, "epochs": 20,
                                                   "steps_per_epoch": 10, "learning_rate": 1e-3}, train_set, work)
    print(f"trained cellpose in {cp_s:.0f} s (mean train diameter {cp_state['diam_labels']:.1f} px, "
          f"resize x{args.diam_mean / cp_state['diam_labels']:.2f}), stardist in {sd_s:.0f} s "
          f"(thresholds {sd_state['thresholds']})", flush=True)
    peers["Cellpose 3 (CPnet, briefly trained)"] = cp
    peers["StarDist2D (32 rays, grid 2, briefly trained)"] = sd
    k = args.detections
    predictors = {"Ours (ResNet-50, W. Refine)": forced_ours("cpu", top_k=k),
                  "Mask R-CNN R50-FPN": box_predictor("mask_rcnn", k), **peers}
    images = [im for _, im, _ in generate("nuclei", args.images + 1, 512, seed=0)]
    rows = []
    for name, (s, n) in time_alternately(predictors, images).items():
        rows.append((name, 1.0 / s, s, n))
        print(f"{name:48s} {1 / s:6.3f} img/s  ({s:.2f} s/img, {n:.0f} instances/img)", flush=True)
    v = versions()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {stamp}: cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
             f"{torch.get_num_threads()} torch threads, {args.images} images timed (+1 dropped), "
             "512x512 synthetic nuclei\n",
             "Versions: " + ", ".join(f"{a} {b}" for a, b in v.items()) + f". Command: `python benchmarks/peers_cpu.py "
             f"--images {args.images} --detections {k}" + (f" --threads {args.threads}" if args.threads else "") + "`.",
             f"Cellpose trained {cp_s:.0f} s, mean train diameter {cp_state['diam_labels']:.1f} px, diam_mean "
             f"{args.diam_mean:g} (images resized x{args.diam_mean / cp_state['diam_labels']:.2f}); StarDist trained "
             f"{sd_s:.0f} s, thresholds prob {sd_state['thresholds']['prob']:.3f}, "
             f"nms {sd_state['thresholds']['nms']:.2f}."
             f" Ours / Mask R-CNN: untrained, K = {k} forced detections.\n",
             "| method | images / s | s / image | instances / image |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {f:.3f} | {s:.2f} | {n:.0f} |" for name, f, s, n in rows]
    ours = [s for name, _, s, _ in rows if name.startswith("Ours")][0]
    lines.append("\nTime per image relative to Ours: " + ", ".join(
        f"{name.split(' (')[0]} {s / ours:.2f}x" for name, _, s, _ in rows if not name.startswith("Ours")))
    append_section(args.out, "# CPU inference time of the peers (benchmarks/peers_cpu.py)\n\n"
                   "Cellpose 3 and StarDist (the `peers` extra) beside Ours and Mask R-CNN, one process, same "
                   "images; see the script's docstring for how each gets realistic detections. Each run appends "
                   "a section.\n", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
