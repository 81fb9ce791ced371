"""Produce ``tests/golden/authors_tiny.json`` by running the AUTHORS' released code (not ours).

    git --git-dir=<mirror of yijingru/ObjGuided-Instance-Segmentation> archive <commit> | tar x -C /tmp/authors
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/golden_authors.py --authors /tmp/authors \
        --commit <commit> --out tests/golden/authors_tiny.json

The authors' code is imported from ``--authors`` (a checkout outside this repository); nothing of it is
copied here. The inputs and the weights come from the recipe in ``tests/test_paper_golden.py`` (images
and masks from a formula, every tensor a pure function of the authors' parameter name and shape), so
``tests/test_paper_golden.py`` can rebuild them for our network without the authors' code. This
script imports nothing of ``objguided``: every number it writes is the authors' code's output.

What runs, all from their code at the given commit:
* targets: ``datasets/base_dataset.BaseDataset.masks_to_bboxes_rois`` (largest component, box filter,
  ROI mask sampled on the 1.1-enlarged grid) and ``datasets/pre_proc.generate_ground_truth``;
* loss: ``models/network.Network`` (ResNet-50, ``pretrained=False``, heads hm/wh/reg, head_conv 256,
  final_kernel 1, down_ratio 4) in train mode, ``forward`` on both images (torch's CPU generator seeded
  with POINT_SEED just before, for the refinement points), each term of ``loss.CtdetLoss`` and its total,
  then ``backward`` and the gradient norms of a few parameters;
* detection: the weights reloaded, BatchNorm running statistics set to one train-mode pass of
  ``forward_dec`` over both images (momentum 1), then per image in eval mode ``forward_dec``,
  ``decoder.DecDecoder(K=500, conf_thresh=0.3).ctdet_decode``, boxes times 4, ``forward_seg_test``
  and ``module.Module.post_processing`` (seg_thresh 0.5 as their README's eval command, nms_thresh
  0.2, the original image = the 128 x 128 input).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def load_recipe():
    spec = importlib.util.spec_from_file_location("paper_golden_recipe", REPO / "tests" / "test_paper_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def r(x, nd=7):
    """Round for the JSON (floats to 7 significant digits)."""
    if isinstance(x, (list, tuple)):
        return [r(v, nd) for v in x]
    if isinstance(x, np.ndarray):
        return r(x.tolist(), nd)
    if isinstance(x, (float, np.floating)):
        return float(f"{float(x):.{nd}g}")
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--authors", required=True, help="a checkout of yijingru/ObjGuided-Instance-Segmentation")
    ap.add_argument("--commit", required=True, help="its commit (recorded in the JSON)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    R = load_recipe()

    sys.path.insert(0, str(Path(args.authors).resolve()))
    import decoder as a_decoder  # noqa: E402  (the authors' modules)
    import loss as a_loss
    import module as a_module
    from datasets.base_dataset import BaseDataset
    from models.network import Network

    from datasets import pre_proc

    images, masks = R.recipe_inputs()
    S = R.SIZE

    # ---- targets (their data path after the warp; our images are already in the input frame)
    ds = BaseDataset.__new__(BaseDataset)
    ds.down_ratio = 4
    per_image, gt_bboxes, gt_rois = [], [], []
    for m in masks:
        bboxes, rois = ds.masks_to_bboxes_rois(m.astype(np.float32))
        dd = pre_proc.generate_ground_truth(gt_bboxes2=bboxes / 4, num_classes=1, image_h=S // 4, image_w=S // 4,
                                            max_objs=500)
        gt_bboxes.append(bboxes)
        gt_rois.append(rois)
        per_image.append(dd)
        hm = dd["hm"][0]
        nz = np.argwhere(hm > 0)
    targets = []
    for dd, bboxes, rois in zip(per_image, gt_bboxes, gt_rois):
        hm = dd["hm"][0]
        nz = np.argwhere(hm > 0)
        k = int(dd["reg_mask"].sum())
        targets.append({
            "gt_bboxes_cxcywh": r(bboxes),
            "hm_nonzero_yx_value": [[int(y), int(x), r(hm[y, x])] for y, x in nz],
            "ind": dd["ind"][:k].tolist(), "wh": r(dd["wh"][:k]), "reg": r(dd["reg"][:k]),
            "reg_mask_sum": k,
            "roi_shapes": [list(q.shape) for q in rois],
            "roi_sums": [r(float(np.asarray(q, np.float64).sum())) for q in rois],
            "roi_sumsq": [r(float((np.asarray(q, np.float64) ** 2).sum())) for q in rois],
        })

    # ---- the network with the recipe's weights
    torch.manual_seed(0)
    net = Network(heads={"hm": 1, "wh": 2, "reg": 2}, pretrained=False, down_ratio=4, final_kernel=1, head_conv=256)
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    recipe_state = {k: R.recipe_value(k, v) for k, v in shapes.items()}
    net.load_state_dict(recipe_state)

    # ---- loss (train mode, both images)
    net.train()
    data = {name: torch.stack([torch.from_numpy(dd[name]) for dd in per_image]) for name in per_image[0]}
    data["image"] = images.clone()
    data["gt_bboxes"] = gt_bboxes
    data["gt_rois"] = gt_rois
    torch.manual_seed(R.POINT_SEED)
    pr = net(data)
    crit = a_loss.CtdetLoss()
    terms = {
        "hm": crit.L_hm(pr["hm"], data["hm"]),
        "wh": crit.L_wh(pr["wh"], data["reg_mask"], data["ind"], data["wh"]),
        "off": crit.L_off(pr["reg"], data["reg_mask"], data["ind"], data["reg"]),
        "seg": crit.seg_loss(pr),
        "point": crit.rend_points_loss(pr),
    }
    total = crit(data, pr)
    total.backward()
    params = dict(net.named_parameters())
    losses = {k: r(float(v)) for k, v in terms.items()}
    losses["total"] = r(float(total))
    grads = {n: r(float(params[n].grad.norm())) for n in R.GRAD_PARAMS}
    n_rois = len(pr["pr_rois"])
    n_points = [int(t.numel()) for t in pr["pr_pts_class0"]]

    # ---- detection (eval mode after BatchNorm calibration)
    net.load_state_dict(recipe_state)
    net.zero_grad(set_to_none=True)
    R.calibrate_batchnorm(net, lambda: net.forward_dec(images.clone()))
    dec = a_decoder.DecDecoder(K=R.K, conf_thresh=R.CONF)
    stub = types.SimpleNamespace()
    pp_args = types.SimpleNamespace(input_h=S, input_w=S, seg_thresh=R.SEG_THRESH, nms_thresh=R.NMS)
    detections = []
    for i in range(images.shape[0]):
        x = images[i:i + 1].clone()
        with torch.no_grad():
            prd = net.forward_dec(x)
            dets = dec.ctdet_decode(prd)
            dets[:, :4] *= 4
            decoded = dets.copy()
            dd = {"image": x, "pr_bboxes": dets}
            prd = net.forward_seg_test(dd, prd)
        kept = np.asarray(prd["pr_bboxes"], np.float32).reshape(-1, 6).copy()
        rois = [q.numpy().astype(np.float64) for q in prd["pr_rois"]]
        image_u8 = np.zeros((S, S, 3), np.uint8)
        dsets = types.SimpleNamespace(img_ids=["img"], load_image=lambda idx: image_u8)
        out = a_module.Module.post_processing(stub, pp_args, prd, dsets, "img") if len(rois) else \
            {"pr_bboxes": [], "pr_rois": []}
        insts = [{"box": [int(v) for v in b[:4]], "score": r(float(b[4])),
                  "soft_sum": r(float(np.asarray(m, np.float64).sum())),
                  "support": int((np.asarray(m) > 0).sum())}
                 for b, m in zip(out["pr_bboxes"], out["pr_rois"])]
        detections.append({
            "decoded_cxcywh_score": r(decoded[:, :5]),
            "with_roi_cxcywh_score": r(kept[:, :5]),
            "roi_shapes": [list(q.shape) for q in rois],
            "roi_sums": [r(q.sum()) for q in rois],
            "roi_max": [r(q.max()) for q in rois],
            "roi_min": [r(q.min()) for q in rois],
            "instances": insts,
        })

    result = {
        "what": "the authors' code's outputs on the recipe of tests/test_paper_golden.py (see tests/golden/README.md)",
        "authors_repo": "https://github.com/yijingru/ObjGuided-Instance-Segmentation",
        "authors_commit": args.commit,
        "command": " ".join(["benchmarks/golden_authors.py"] + sys.argv[1:]),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                        "machine": platform.machine()},
        "recipe": {"size": S, "point_seed": R.POINT_SEED, "K": R.K, "conf_thresh": R.CONF,
                   "seg_thresh": R.SEG_THRESH, "nms_thresh": R.NMS, "overrides": R.OVERRIDES,
                   "output_scale": R.OUTPUT_SCALE},
        "authors_state_shapes": shapes,
        "targets": targets,
        "losses": losses,
        "n_rois": n_rois,
        "n_points_per_roi": n_points,
        "grad_norms": grads,
        "detections": detections,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"losses": losses, "n_rois": n_rois, "dets": [len(d["decoded_cxcywh_score"]) for d in detections],
                      "with_roi": [len(d["with_roi_cxcywh_score"]) for d in detections],
                      "instances": [len(d["instances"]) for d in detections]}))


if __name__ == "__main__":
    main()
