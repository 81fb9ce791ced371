"""CPU inference time per 512x512 image of the dense baselines ``dcan`` and ``cosine_embedding``.

    .venv/bin/python benchmarks/dense_baselines_cpu.py            # records benchmarks/results/dense_baselines_cpu.md
    .venv/bin/python benchmarks/dense_baselines_cpu.py --images 3 --threads 2

Weights: no trained paper-size model exists here, so each network runs with its **random initial
weights** (a forward pass costs the same whatever the weights). The post-processing's cost, however,
depends on what the network says, and random weights say nothing realistic. So the post-processing
is timed on **oracle maps** made from the image's ground truth, i.e. on what a perfectly trained
network would output:

- DCAN: ``p_obj`` = 0.95 on objects, 0.05 elsewhere; ``p_contour`` = 0.95 on the 2-px contour target;
  then the method's fusion (thresholds 0.5/0.5, min size 5, dilation 2) and instance scoring.
- Cosine Embedding: one random unit direction per instance (background too) plus Gaussian noise (sd
  0.05 per channel), normalised; then the method's clustering (the authors' parameters: cos^2 0.5,
  HDBSCAN min_cluster_size 50, min_samples 50, coordinates x 0.01, min size 50; ``max_points`` 20000)
  and the cohesion scores.

Images: synthetic 512x512 nuclei (``objguided.data.synthetic``, seed 0). Per image: network (batch 1,
``torch.inference_mode``, the method's own preprocessing) + post-processing, timed separately; the
first image is dropped (warm-up); mean over the rest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def dcan_runner(width: int, batch_norm: bool = False):
    from objguided_methods.dcan import DCANConfig, build_net, contour_target, instances_from, probability_maps, segment

    torch.manual_seed(0)
    net = build_net(width, batch_norm).eval()
    cfg = DCANConfig(width=width, batch_norm=batch_norm)

    def run(image, labels):
        t0 = time.perf_counter()
        probability_maps(net, image, cfg, "cpu")
        t1 = time.perf_counter()
        p_obj = np.where(labels > 0, 0.95, 0.05).astype(np.float32)
        p_cnt = (contour_target(labels, 2) * 0.9 + 0.05).astype(np.float32)
        t2 = time.perf_counter()
        final, core = segment(p_obj, p_cnt, 0.5, 0.5, 5, 2)
        inst = instances_from(final, core, p_obj, p_cnt)
        return t1 - t0, time.perf_counter() - t2, len(inst)

    return run


def cosine_runner(levels: int, filters: int):
    from objguided_methods.cosine_embedding import (
        CosineEmbeddingConfig,
        build_net,
        cluster,
        embeddings_of,
        instances_from,
    )

    torch.manual_seed(0)
    net = build_net(levels, filters, 16).eval()
    cfg = CosineEmbeddingConfig(levels=levels, filters=filters)

    def run(image, labels):
        t0 = time.perf_counter()
        embeddings_of(net, image, cfg, "cpu")
        t1 = time.perf_counter()
        rng = np.random.default_rng(0)
        dirs = rng.normal(size=(int(labels.max()) + 1, 16)).astype(np.float32)
        emb = dirs[labels] + 0.05 * rng.normal(size=(*labels.shape, 16)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=2, keepdims=True)
        t2 = time.perf_counter()
        out = cluster(emb, 0.5, 50, 50, 0.01, 50, max_points=cfg.max_points)
        inst = instances_from(out, emb)
        return t1 - t0, time.perf_counter() - t2, len(inst)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4, help="images (the first is dropped)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dense_baselines_cpu.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from objguided.data.synthetic import generate

    data = [(im, lab) for _, im, lab in generate("nuclei", max(args.images, 2), 512, 0)]
    runs = [
        ("dcan", "paper: VGG16 widths (width 64), no BN", dcan_runner(64)),
        ("dcan", "demo: width 8, BN", dcan_runner(8, True)),
        ("cosine_embedding", "paper: 7 levels x 64 filters, 2 stages", cosine_runner(7, 64)),
        ("cosine_embedding", "demo: 4 levels x 16 filters, 2 stages", cosine_runner(4, 16)),
    ]
    rows = []
    for name, what, run in runs:
        times = [run(im, lab) for im, lab in data]
        kept = times[1:]
        net_s = float(np.mean([t[0] for t in kept]))
        post_s = float(np.mean([t[1] for t in kept]))
        n_obj = float(np.mean([t[2] for t in kept]))
        rows.append((name, what, net_s, post_s, n_obj))
        print(f"{name:17s} {what:42s} network {net_s:6.3f} s  post {post_s:6.3f} s  total {net_s + post_s:6.3f} s"
              f"  ({n_obj:.0f} objects)", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        "# Dense baselines: CPU inference time per 512x512 image",
        "",
        f"Recorded {dt.datetime.now().isoformat(timespec='minutes')} by `benchmarks/dense_baselines_cpu.py` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average at the end {load[0]:.1f} (the machine is shared: "
        "absolute numbers are noisy).",
        "",
        "Weights: the networks' random initial weights (a forward pass costs the same whatever the weights); the "
        "post-processing runs on oracle maps made from the ground truth (what a perfectly trained network would "
        "output; see the script's docstring). Synthetic 512x512 nuclei, batch 1, first image dropped, mean of "
        f"{len(data) - 1} images.",
        "",
        "| method | network | network s | post-processing s | total s/image | objects/image |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, what, net_s, post_s, n_obj in rows:
        lines.append(f"| {name} | {what} | {net_s:.3f} | {post_s:.3f} | {net_s + post_s:.3f} | {n_obj:.0f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
