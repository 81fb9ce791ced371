"""CPU images per second at 512x512, batch 1, whole inference: Ours (ResNet-50) against Mask R-CNN R50-FPN.

    .venv/bin/python benchmarks/cpu_speed.py              # records benchmarks/results/cpu_speed.md
    .venv/bin/python benchmarks/cpu_speed.py --images 4 --detections 100

Both networks are untrained (no weights can be downloaded here), so the number of detections is forced
to be realistic and equal-ish for the two:

- **Ours**: the paper's inference path (resize to 512, ``detect``, ``to_instances`` with mask NMS)
  with the score threshold at 0 and top-K = ``--detections``, so exactly K heatmap peaks become
  detections; the untrained size head would give boxes of about 0 px (no ROI at all), so the sizes the
  decoder reads come from a fixed random map of box sizes uniform in 8-40 px (the nuclei range of DSB2018;
  seeded; the size head itself still runs), which gives the ROI branch K ROIs of varied sizes, as on real
  data. Timed twice: with the size and offset heads at the peaks only (the default on CPU) and dense.
- **Mask R-CNN**: torchvision's ``maskrcnn_resnet50_fpn`` (2 classes, images resized to 512,
  ``box_detections_per_img`` = ``--detections``); its untrained box scores (~0.5) pass the default
  0.05 threshold, so it returns up to K detections after its box NMS; masks pasted at full size and
  thresholded at 0.5 (part of the timing).

Synthetic 512x512 nuclei images; the two methods are timed alternately image by image (the machine is
shared: alternating spreads load spikes over both), first image dropped, FPS = 1 / mean seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SIZE_RANGE_PX = (8.0, 40.0)


def _force_sizes(net, seed: int = 0) -> None:
    """Make ``net.decode`` read box sizes from a fixed random map (heatmap cells) instead of the untrained
    size head, whose output is still computed (dense or at the peaks, as the network does): its cost counts."""
    decode, cache = net.decode, {}

    def forced_decode(out, score_threshold=0.3, top_k=500, at=None):
        hm = out["hm"]
        shape = (hm.shape[0], 2, hm.shape[2] * hm.shape[3])
        if shape not in cache:
            g = torch.Generator().manual_seed(seed)
            lo, hi = (s / 4 for s in SIZE_RANGE_PX)
            cache[shape] = (lo + (hi - lo) * torch.rand(shape, generator=g)).to(hm)
        base = at or (lambda name, i, ind: out[name][i].reshape(2, -1)[:, ind])

        def forced_at(name, i, ind):
            value = base(name, i, ind)
            return cache[shape][i][:, ind] if name == "wh" else value

        return decode(out, score_threshold, top_k, at=forced_at)

    net.decode = forced_decode


def forced_ours(device: str, top_k: int = 100, backbone: str = "resnet50", size: int = 512, refine: bool = True,
                sparse_heads: bool = True):
    """A predictor image -> instances of an untrained network with ``top_k`` forced detections."""
    from objguided.models.config import ModelConfig
    from objguided.models.network import ObjGuidedNet
    from objguided_methods.objguided import ObjGuidedConfig, predict_with

    torch.manual_seed(0)
    net = ObjGuidedNet(ModelConfig(backbone=backbone, pretrained=None, refine=refine, sparse_heads=sparse_heads))
    _force_sizes(net)
    net = net.to(device).eval()
    cfg = ObjGuidedConfig(backbone=backbone, pretrained=None, input_size=size, score_threshold=0.0, top_k=top_k)
    return lambda image: next(predict_with(net, [image], cfg, device))


def mask_rcnn(device: str, detections: int = 500, size: int = 512):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2, box_detections_per_img=detections,
        min_size=size, max_size=size)
    return model.to(device).eval()


def mask_rcnn_instances(model, image: np.ndarray, device: str) -> list[tuple[np.ndarray, float]]:
    """Whole Mask R-CNN inference of one uint8 image: (bool mask at the image's size, score) per object."""
    img = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    with torch.inference_mode():
        x = torch.from_numpy(np.array(img, np.uint8, copy=True)).to(device).permute(2, 0, 1).float() / 255
        out = model([x])[0]
        masks = (out["masks"][:, 0] > 0.5).cpu().numpy()
        scores = out["scores"].cpu().numpy()
    return list(zip(masks, scores.tolist()))


def time_alternately(predictors: dict, images: list) -> dict[str, tuple[float, float]]:
    """Time every predictor (image -> instances) on every image, alternating methods image by image so that
    load spikes of a shared machine hit all of them; the first image is dropped (warm-up).

    Returns ``{name: (mean seconds per image, mean instances per image)}`` over the kept images."""
    seconds: dict[str, list[float]] = {name: [] for name in predictors}
    counts: dict[str, list[int]] = {name: [] for name in predictors}
    for image in images:
        for name, predict in predictors.items():
            t0 = time.perf_counter()
            found = predict(image)
            seconds[name].append(time.perf_counter() - t0)
            counts[name].append(len(found))
    return {name: (float(np.mean(seconds[name][1:])), float(np.mean(counts[name][1:]))) for name in predictors}


def append_section(path: str | Path, header: str, text: str) -> None:
    """Append a run's section to a results file (``header`` first when the file is new), and print it."""
    out = Path(path)
    if not out.exists():
        out.write_text(header)
    with out.open("a") as f:
        f.write(text)
    print(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=6, help="images timed per method (+1 dropped)")
    ap.add_argument("--detections", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cpu_speed.md"))
    ap.add_argument("--count-macs", action="store_true",
                    help="also count each method's multiply-accumulates on the first image (torch's FlopCounterMode)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from objguided.data.synthetic import generate

    images = [im for _, im, _ in generate("nuclei", args.images + 1, 512, seed=0)]
    device = "cpu"
    rows, macs = [], {}
    for k in args.detections:
        predictors = {"Ours (ResNet-50, W. Refine)": forced_ours(device, top_k=k),
                      "Ours, dense size/offset heads": forced_ours(device, top_k=k, sparse_heads=False),
                      "Mask R-CNN R50-FPN (torchvision)": (lambda m: (lambda im: mask_rcnn_instances(m, im, device)))(
                          mask_rcnn(device, detections=k))}
        timed = time_alternately(predictors, images)
        if args.count_macs:
            from torch.utils.flop_counter import FlopCounterMode

            for name, predict in predictors.items():
                with FlopCounterMode(display=False) as counter:
                    predict(images[0])
                macs[(k, name)] = counter.get_total_flops() / 2e9
        for name, (s, n) in timed.items():
            rows.append((k, name, 1.0 / s, s, n))
            print(f"K={k:4d}  {name:36s} {1 / s:6.3f} img/s  ({s:.2f} s/img, {n:.0f} instances/img)", flush=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {stamp}: cpu ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, {args.images} images timed (+1 dropped), 512x512 synthetic nuclei\n",
             "| detections (K) | method | images / s | s / image | instances / image (after NMS) | GMACs / image |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {k} | {name} | {f:.3f} | {s:.2f} | {n:.0f} | "
              + (f"{macs[(k, name)]:.1f} |" if (k, name) in macs else "not counted |") for k, name, f, s, n in rows]
    for k in args.detections:
        ours = [f for kk, n, f, *_ in rows if kk == k and n.startswith("Ours (")][0]
        dense = [f for kk, n, f, *_ in rows if kk == k and n.startswith("Ours, dense")][0]
        mr = [f for kk, n, f, *_ in rows if kk == k and n.startswith("Mask")][0]
        lines.append(f"\nK = {k}: Ours / Mask R-CNN = **{ours / mr:.2f}x** (dense heads: {dense / mr:.2f}x)")
    append_section(args.out, "# CPU speed: Ours vs Mask R-CNN (benchmarks/cpu_speed.py)\n\n"
                   "Goal: Ours at least 2x Mask R-CNN's images per second. See the script's docstring for how "
                   "realistic detections are obtained from untrained networks. Each run appends a section.\n",
                   "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
