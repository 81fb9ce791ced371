r"""FPS of Ours, Mask R-CNN and PointRend on the DSB2018 test split, the paper's protocol, on one device.

    .venv/bin/python benchmarks/gpu_fps.py                        # cuda, all test images of DSB2018, untrained
    .venv/bin/python benchmarks/gpu_fps.py --ours results/dsb2018/objguided/refine/seed317/model.pt \
        --mask-rcnn MASK_RCNN_MODEL.pt --pointrend POINTREND_MODEL.pt   # trained (objguided train outputs)
    .venv/bin/python benchmarks/gpu_fps.py --device cpu --limit 3 --data DATA --out /tmp/x.md   # smoke

Protocol (docs/protocol.md, as ``objguided time``): batch 1, images read into memory first, the
time of an image is from asking for it to having its final instances (forward, decoding, ROI
segmentation, post-processing; CUDA synchronised), the first image is dropped, FPS = 1 / mean. The
methods are timed one after the other, each over all the images.

- **Ours**: the trained model file given by ``--ours`` (an ``objguided train`` output), else an
  untrained ResNet-50 network with realistic detections forced as in benchmarks/cpu_speed.py
  (threshold 0, top-K 500, box sizes forced to 8-40 px). The paper's inference path (resize to 512).
- **Mask R-CNN** (``mask_rcnn``) and **PointRend** (``pointrend``): one code path for both torchvision
  detectors. Each network is built once (``methods.mask_rcnn.build_model`` /
  ``methods._pointrend_net.build_model``) and every image is timed as
  ``next(methods._torchvision_detection.predict_detector(model, [image], cfg, device))``: the methods' own
  inference (resize to ``input_size`` 512, backbone, RPN, ROI heads, masks pasted at the image's resolution
  and thresholded, empty masks dropped), so both share one post-processing. ``--mask-rcnn`` /
  ``--pointrend`` give an ``objguided train`` output of that method (its config and state, loaded as the
  method's ``predict`` does: ``rebuild_backbone(cfg, frozen_bn)`` then ``load_state_dict``); without one,
  the reference R50-FPN configuration, untrained, with the box score and mask thresholds at 0 and the
  per-image detection cap ``box_detections_per_img`` = 500 (as benchmarks/box_baselines_cpu.py): an
  untrained box classifier scores every proposal near 0.5, so each image gets up to 500 detections, all of
  them pasted and returned (the instance counts are reported beside the FPS).

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

from cpu_speed import append_section, forced_ours  # noqa: E402

from objguided.data.canonical import CanonicalDataset  # noqa: E402
from objguided.engine.provenance import describe_device  # noqa: E402
from objguided.engine.run import load_model  # noqa: E402

#: the per-image detection cap of the untrained networks (Ours: top-K forced detections)
DETECTIONS = 500
#: the torchvision detectors timed, in order: (method name = its flag's dest, row label)
DETECTORS = (("mask_rcnn", "Mask R-CNN"), ("pointrend", "PointRend"))


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


def detector(name: str, model_path: str | None, device: str, detections: int = DETECTIONS):
    """``(predict, cfg, what)`` of the torchvision detector ``name`` (``mask_rcnn`` | ``pointrend``): the
    network built once, ``predict(image) -> instances`` through the methods' shared ``predict_detector``."""
    import objguided_methods as methods
    from objguided_methods._torchvision_detection import predict_detector, rebuild_backbone, state_model

    if name == "mask_rcnn":
        from objguided_methods.mask_rcnn import build_model
    else:
        from objguided_methods._pointrend_net import build_model
    method = methods.get(name)
    if model_path:
        record = load_model(model_path)
        if record.get("method") != name:
            raise SystemExit(f"{model_path}: a {record.get('method')!r} model file, expected a {name!r} one")
        cfg = method.make_config(record["params"])
        state = state_model(record["state"], name)
        model = build_model(cfg, rebuild_backbone(cfg, state["frozen_bn"]))
        model.load_state_dict(state["model"])
        what = f"trained ({model_path})"
    else:
        cfg = method.make_config({"pretrained": "none", "box_score_thresh": 0.0, "mask_threshold": 0.0,
                                  "box_detections_per_img": detections,
                                  "rpn_post_nms_top_n_test": max(1000, detections)})
        torch.manual_seed(0)
        model = build_model(cfg)
        what = f"untrained, score and mask thresholds 0, cap {detections}"
    model = model.to(device).eval()
    return (lambda image: next(predict_detector(model, [image], cfg, device))), cfg, what


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO / "resources" / "data" / "dsb2018"))
    ap.add_argument("--split", default=None, help="split.json (default: <data>/split.json)")
    ap.add_argument("--subset", default="test")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit", type=int, default=None, help="time at most this many images")
    ap.add_argument("--ours", default=None, help="an objguided model file (objguided train output)")
    ap.add_argument("--mask-rcnn", default=None, help="a mask_rcnn model file (objguided train output)")
    ap.add_argument("--pointrend", default=None, help="a pointrend model file (objguided train output)")
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
        import objguided_methods as methods
        from objguided_methods.objguided import build_net, predict_with

        record = load_model(args.ours)
        cfg = methods.get("objguided").make_config(record["params"])
        net = build_net(record["state"], device)
        ours_predict = lambda image: next(predict_with(net, [image], cfg, device))  # noqa: E731
        ours_what = f"trained ({args.ours})"
    else:
        ours_predict = forced_ours(device, top_k=DETECTIONS)
        ours_what = f"untrained ResNet-50, {DETECTIONS} forced detections of 8-40 px"
    ours_fps, ours_s, ours_n = timed(ours_predict, images, device)

    # Mask R-CNN and PointRend: built once each, timed through the same predict_detector
    detector_rows = []
    for method_name, label in DETECTORS:
        predict, cfg, what = detector(method_name, getattr(args, method_name), device)
        fps, _, counts = timed(predict, images, device)
        detector_rows.append(f"| {label} {cfg.backbone}-FPN (torchvision; {what}) | {fps:.2f} | "
                             f"{np.mean(counts):.0f} |")
        del predict

    name = describe_device(device)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = [f"| Ours ({ours_what}) | {ours_fps:.2f} | {np.mean(ours_n):.0f} |"] + detector_rows
    text = (f"\n## {stamp}: {name}, {data.name} {args.subset} ({len(images) - 1} images timed, first dropped)\n\n"
            f"torch {torch.__version__}; batch 1; whole inference incl. post-processing; Ours: the paper's inference "
            "path; Mask R-CNN and PointRend: one `predict_detector` path (benchmarks/gpu_fps.py).\n\n"
            "| method | FPS | instances / image |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n")
    append_section(args.out, "# FPS on the DSB2018 test split (benchmarks/gpu_fps.py)\n\nThe paper's FPS (one GTX "
                   "1080): Ours 2.80 (W. Refine) / 3.22 (W.O.), Mask R-CNN 1.01 (Table I, DSB2018).\n", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
