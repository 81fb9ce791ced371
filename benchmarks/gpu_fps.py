"""FPS of Ours and Mask R-CNN on the DSB2018 test split, the paper's protocol, on one device.

    .venv/bin/python benchmarks/gpu_fps.py                        # cuda, all test images of DSB2018
    .venv/bin/python benchmarks/gpu_fps.py --ours results/dsb2018/objguided/refine/seed317/model.pt
    .venv/bin/python benchmarks/gpu_fps.py --device cpu --limit 3 --data resources/data/synth-nuclei   # smoke

Protocol (REFERENCE.md section 2, as ``objguided time``): batch 1, images read into memory first, the
time of an image is from asking for it to having its final instances (forward, decoding, ROI
segmentation, post-processing; CUDA synchronised), the first image is dropped, FPS = 1 / mean.

- **Ours**: the trained model file given by ``--ours`` (an ``objguided train`` output), else an
  untrained ResNet-50 network with realistic detections forced as in benchmarks/cpu_speed.py
  (threshold 0, top-K 500, box sizes forced to 8-40 px). The paper's inference path (letterbox 512).
- **Mask R-CNN**: torchvision's R50-FPN (untrained unless ``--mask-rcnn`` gives a state dict), two
  classes, ``box_detections_per_img`` 500, images resized to 512 (min_size = max_size = 512), masks
  pasted and thresholded at 0.5 (part of the timing).

Results are appended to benchmarks/results/gpu_fps.md (device named) and printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cpu_speed import forced_ours, mask_rcnn, mask_rcnn_instances  # noqa: E402

from objguided.data.canonical import CanonicalDataset  # noqa: E402
from objguided.engine.provenance import describe_device  # noqa: E402


def timed(predict, images, device: str) -> tuple[float, list[float], list[int]]:
    """(FPS, per-image seconds without the first, instances per image) of a batch-1 predictor."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    seconds, counts = [], []
    for image in images:
        sync()
        t0 = time.perf_counter()
        found = predict(image)
        sync()
        seconds.append(time.perf_counter() - t0)
        counts.append(len(found))
    kept = seconds[1:] if len(seconds) > 1 else seconds
    return 1.0 / float(np.mean(kept)), kept, counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO / "resources" / "data" / "dsb2018"))
    ap.add_argument("--split", default=None, help="split.json (default: <data>/split.json)")
    ap.add_argument("--subset", default="test")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit", type=int, default=None, help="time at most this many images")
    ap.add_argument("--ours", default=None, help="an objguided model file (objguided train output)")
    ap.add_argument("--mask-rcnn", default=None, help="a torchvision Mask R-CNN state dict")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_fps.md"))
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: pass --device cpu for a smoke run", file=sys.stderr)
        return 2
    data = Path(args.data)
    ds = CanonicalDataset(data, args.subset, args.split or data / "split.json")
    ids = ds.ids[: args.limit] if args.limit else ds.ids
    if len(ids) < 2:
        ids = list(ids) * 2
    images = [ds.image(i) for i in ids]
    device = args.device

    # Ours
    if args.ours:
        from methods.objguided import build_net, predict_with
        from objguided.engine.run import load_model

        import methods

        record = load_model(args.ours)
        cfg = methods.get("objguided").make_config(record["params"])
        net = build_net(record["state"], device)
        ours_predict = lambda image: next(predict_with(net, [image], cfg, device))  # noqa: E731
        ours_what = f"trained ({args.ours})"
    else:
        ours_predict = forced_ours(device, top_k=500)
        ours_what = "untrained ResNet-50, 500 forced detections of 8-40 px"
    ours_fps, ours_s, ours_n = timed(ours_predict, images, device)

    # Mask R-CNN
    model = mask_rcnn(device, detections=500)
    if args.mask_rcnn:
        model.load_state_dict(torch.load(args.mask_rcnn, map_location="cpu"))
    mr_predict = lambda image: mask_rcnn_instances(model, image, device)  # noqa: E731
    mr_fps, mr_s, mr_n = timed(mr_predict, images, device)

    name = describe_device(device)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = [f"| Ours ({ours_what}) | {ours_fps:.2f} | {np.mean(ours_n):.0f} |",
            f"| Mask R-CNN R50-FPN (torchvision{', trained' if args.mask_rcnn else ', untrained'}) | {mr_fps:.2f} | "
            f"{np.mean(mr_n):.0f} |"]
    text = (f"\n## {stamp}: {name}, {data.name} {args.subset} ({len(images) - 1} images timed, first dropped)\n\n"
            f"torch {torch.__version__}; batch 1; whole inference incl. post-processing; paper's inference path.\n\n"
            "| method | FPS | instances / image |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n")
    out = Path(args.out)
    if not out.exists():
        out.write_text("# FPS on the DSB2018 test split (benchmarks/gpu_fps.py)\n\nThe paper's FPS (one GTX 1080): "
                       "Ours 2.80 (W. Refine) / 3.22 (W.O.), Mask R-CNN 1.01 (Table I, DSB2018).\n")
    with out.open("a") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
