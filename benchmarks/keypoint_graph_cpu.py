"""CPU seconds per 512x512 image, batch 1, for the ``keypoint_graph`` baseline, split into its three stages.

    .venv/bin/python benchmarks/keypoint_graph_cpu.py                 # records benchmarks/results/keypoint_graph_cpu.md
    .venv/bin/python benchmarks/keypoint_graph_cpu.py --threads 1          # what the results file holds
    .venv/bin/python benchmarks/keypoint_graph_cpu.py --backbone resnet18 --head-kernel 3 --head-width 32 --no-write

The network is **untrained** (no weights can be downloaded here, and a ResNet-50 at 512 px cannot be
trained on this CPU in reasonable time). An untrained network's keypoint maps are noise, which would make
the decoding time meaningless (thousands of spurious peaks), so each stage is timed on realistic input:

1. **network**: the full forward pass (backbone to layer3, decoder, the 3 heads at 4 scales, and the
   segmentation branch's level-0 convolutions) on the image stretched to 512x512;
2. **decode**: voting, peaks, star grouping and box rules at the 4 scales and the NMS merge, on the
   *perfect* keypoint maps and offsets of the image's ground truth (what a well-trained network gives);
3. **segment**: the segmentation branch on each decoded box, the paste into the 512 canvas, the bilinear
   resize to the original size and the threshold.

Synthetic 512x512 nuclei images (``objguided.data.synthetic``, seed 0); the first image is dropped
(warm-up); seconds = mean over the others. The machine is shared with other jobs: the load average
is recorded with the numbers.
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


def main(argv=None) -> int:
    from objguided.data.synthetic import generate
    from objguided.models.preprocess import prepare
    from objguided_methods._keypoint_graph_core import decode_scale, nms
    from objguided_methods._keypoint_graph_net import SCALES, KeypointGraphNet
    from objguided_methods.keypoint_graph import KeypointGraphConfig, build_targets, rgb3

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--head-kernel", type=int, default=7)
    ap.add_argument("--head-width", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "keypoint_graph_cpu.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = KeypointGraphConfig(backbone=args.backbone, pretrained=None, head_kernel=args.head_kernel,
                              head_width=args.head_width, input_size=args.size)
    torch.manual_seed(0)
    net = KeypointGraphNet(args.backbone, None, args.head_kernel, args.head_width).eval()
    rows = []
    for image_id, image, labels in generate("nuclei", args.images, args.size, 0):
        with torch.inference_mode():
            t0 = time.perf_counter()
            tensor, frame = prepare(rgb3(image), cfg.input_size, mode="stretch")
            out = net(tensor[None])
            t1 = time.perf_counter()
            # perfect maps from the ground truth, in place of the untrained heads' noise
            targets = build_targets(frame.labels_to_input(labels), cfg)
            t2 = time.perf_counter()
            boxes, scores = [], []
            for s, (heat, short, mid) in zip(SCALES, targets["scales"]):
                b, sc = decode_scale(heat, short, mid, cfg.radius, cfg.sigma, cfg.peak_threshold, cfg.match_radius,
                                     cfg.seed_exclusion)
                boxes.append(b * s)
                scores.append(sc)
            boxes, scores = np.concatenate(boxes), np.concatenate(scores)
            keep = nms(boxes, scores, cfg.nms_iou)[: cfg.max_detections]
            t3 = time.perf_counter()
            n_masks = 0
            for box in boxes[keep]:
                res = net.segment(out["seg_feats"], 0, box)
                if res is None:
                    continue
                logits, (y1, _, x1, _) = res
                win, oy, ox = frame.window_to_orig(torch.sigmoid(logits).numpy(), y1, x1, "bilinear")
                mask = np.zeros(labels.shape, bool)
                mask[oy:oy + win.shape[0], ox:ox + win.shape[1]] = win >= cfg.mask_threshold
                n_masks += 1
            t4 = time.perf_counter()
        n_gt = int(labels.max())
        rows.append({"id": image_id, "network": t1 - t0, "decode": t3 - t2, "segment": t4 - t3,
                     "boxes": int(len(keep)), "gt": n_gt, "rois": n_masks})
        print(f"{image_id}: network {t1 - t0:.2f} s, decode {t3 - t2:.2f} s ({len(keep)} boxes of {n_gt} objects), "
              f"segment {t4 - t3:.2f} s", flush=True)
    timed = rows[1:] if len(rows) > 1 else rows
    mean = {k: float(np.mean([r[k] for r in timed])) for k in ("network", "decode", "segment")}
    total = sum(mean.values())
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"mean over {len(timed)} images: network {mean['network']:.2f} s + decode {mean['decode']:.2f} s + "
          f"segment {mean['segment']:.2f} s = {total:.2f} s per image ({1 / total:.3f} FPS)")
    if not args.no_write:
        head = f"{args.head_kernel}x{args.head_kernel}, width {args.head_width or 'level width'}"
        lines = [
            "# keypoint_graph: CPU inference time per 512x512 image",
            "",
            f"Recorded {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `.venv/bin/python "
            f"{' '.join(['benchmarks/keypoint_graph_cpu.py', *(argv if argv is not None else sys.argv[1:])])}`.",
            "",
            f"- Network: {args.backbone} up to layer3, heads {head}, **untrained** (random init; no weights here).",
            f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
            f"jobs (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end), torch "
            f"{torch.__version__}, {torch.get_num_threads()} torch threads.",
            f"- Input: synthetic nuclei images {args.size}x{args.size} (seed 0), stretched to {cfg.input_size}; "
            f"batch 1; first image dropped, mean over {len(timed)}.",
            "- decode and segment run on the ground truth's perfect keypoint maps and offsets (an untrained "
            "network's maps are noise); see the script's docstring.",
            "",
            "| image | objects | boxes | network (s) | decode (s) | segment (s) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            lines.append(f"| {r['id']}{' (dropped)' if r is rows[0] and len(rows) > 1 else ''} | {r['gt']} | "
                         f"{r['boxes']} | {r['network']:.2f} | {r['decode']:.2f} | {r['segment']:.2f} |")
        lines += ["", f"**Mean: {mean['network']:.2f} + {mean['decode']:.2f} + {mean['segment']:.2f} = "
                      f"{total:.2f} s per image ({1 / total:.3f} images/s).**", ""]
        Path(args.out).write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
