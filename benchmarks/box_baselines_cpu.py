"""CPU seconds per 512x512 image, batch 1, whole inference: the box baselines ``mask_rcnn`` and ``pointrend``.

    .venv/bin/python benchmarks/box_baselines_cpu.py          # appends to benchmarks/results/box_baselines_cpu.md
    .venv/bin/python benchmarks/box_baselines_cpu.py --images 3 --detections 100 500 --threads 2

Both networks are the methods' reference configurations (ResNet-50-FPN, input 512, heads of the default
config) with untrained weights (nothing can be downloaded here), run through the methods' own inference path
(``methods._torchvision_detection.predict_detector``: transform, backbone, RPN, ROI heads, masks pasted at
the image's resolution and thresholded, per-instance bool masks). Realistic detection counts: an untrained
box classifier scores every proposal near 0.5, so with the score threshold at 0 the ROI heads keep ``min(K,
proposals left after box NMS 0.5)`` detections, K = ``box_detections_per_img``; the number actually obtained
is reported (K = 100 is a typical DSB2018 image, 500 the cap, above the largest DSB2018 count of 375). The
mask threshold is 0 so that no instance is dropped for an empty mask (an untrained PointRend head predicts
logits near 0, so at 0.5 most of its masks would come out empty and uncounted): every detection is pasted
and returned, as a trained model's would be. For PointRend each detection costs the coarse head plus three
point-head passes over 28^2 points (the 14x14 step is skipped, as in detectron2) and a 224x224 paste.

Synthetic 512x512 nuclei images; the two methods are timed alternately image by image (the machine is
shared: alternating spreads load spikes over both), first image dropped, FPS = 1 / mean seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from cpu_speed import append_section, time_alternately  # noqa: E402


def predictor(name: str, detections: int, device: str = "cpu", backbone: str = "resnet50"):
    """An untrained ``name`` network (reference config) as a function image -> instances."""
    import objguided_methods as methods
    from objguided_methods._torchvision_detection import predict_detector

    method = methods.get(name)
    cfg = method.make_config({"backbone": backbone, "pretrained": "none", "box_score_thresh": 0.0,
                              "mask_threshold": 0.0,
                              "box_detections_per_img": detections,
                              "rpn_post_nms_top_n_test": max(1000, detections)})
    torch.manual_seed(0)
    if name == "mask_rcnn":
        from objguided_methods.mask_rcnn import build_model
    else:
        from objguided_methods._pointrend_net import build_model
    model = build_model(cfg).to(device).eval()
    return lambda image: next(predict_detector(model, [image], cfg, device))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3, help="images timed per method (+1 dropped)")
    ap.add_argument("--detections", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "box_baselines_cpu.md"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from objguided.data.synthetic import generate

    images = [im for _, im, _ in generate("nuclei", args.images + 1, 512, seed=0)]
    rows = []
    for k in args.detections:
        predictors = {"Mask R-CNN R50-FPN": predictor("mask_rcnn", k), "PointRend R50-FPN": predictor("pointrend", k)}
        for name, (s, n) in time_alternately(predictors, images).items():
            rows.append((k, name, 1.0 / s, s, n))
            print(f"K={k:4d}  {name:20s} {1 / s:6.3f} img/s  ({s:.2f} s/img, {n:.0f} instances/img)", flush=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {stamp}: cpu ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, {args.images} images timed (+1 dropped), 512x512 synthetic nuclei\n",
             "| detections cap (K) | method | images / s | s / image | instances / image |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {k} | {name} | {f:.3f} | {s:.2f} | {n:.0f} |" for k, name, f, s, n in rows]
    for k in args.detections:
        mr = [s for kk, n, _, s, _ in rows if kk == k and n.startswith("Mask")][0]
        pr = [s for kk, n, _, s, _ in rows if kk == k and n.startswith("Point")][0]
        lines.append(f"\nK = {k}: PointRend / Mask R-CNN time per image = **{pr / mr:.2f}x**")
    append_section(args.out, "# CPU inference time of the box baselines (benchmarks/box_baselines_cpu.py)\n\n"
                   "Untrained reference networks (ResNet-50-FPN, input 512) with realistic detection counts; see "
                   "the script's docstring. Ours vs Mask R-CNN on the same kind of machine: "
                   "benchmarks/results/cpu_speed.md (benchmarks/cpu_speed.py). Each run appends a section.\n",
                   "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
