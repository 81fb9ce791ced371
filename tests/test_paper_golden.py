"""Golden numbers from the authors' released code: the same weights, the same images and masks, run
through their ``Network`` + ``CtdetLoss`` + ``DecDecoder`` + ``Module.post_processing`` once
(``benchmarks/golden_authors.py``, see ``tests/golden/README.md`` for the command and their commit),
and through ours here; every target, loss term, gradient norm and detection must agree.

Nothing here runs the authors' code and nothing of it is copied: this file holds the *recipe* of the
inputs (a formula for the images and masks, a formula for every weight keyed by the authors' parameter
name), which the generator script imports so both sides see exactly the same numbers, and the
translation of our parameter names into theirs (itself a pin of the architecture: every tensor of
their network must have a counterpart of the same shape in ours, and nothing more).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden" / "authors_tiny.json"

# ----------------------------------------------------------------------------------------- recipe
# Pure numpy/torch: shared by this test and the generator that runs the authors' code.

SIZE = 128  # network input (and image) size: 32 x 32 heatmap, > 500 cells (the authors' top-K = 500)

#: one list of shapes per image, painted in order into a label map (later shapes win overlaps).
#: ("rect", x1, y1, x2, y2) inclusive; ("ellipse", cx, cy, rx, ry). Shapes sharing an "id" are one object.
SHAPES = [
    [
        {"id": 1, "kind": "rect", "args": [10, 12, 29, 27]},
        {"id": 2, "kind": "ellipse", "args": [70, 30, 12, 9]},
        {"id": 3, "kind": "ellipse", "args": [40, 80, 10, 8]},
        {"id": 4, "kind": "ellipse", "args": [57, 82, 9, 9]},  # touches object 3
        {"id": 5, "kind": "rect", "args": [90, 10, 91, 15]},  # 2 px wide: no target (x2 - x1 = 1)
        {"id": 6, "kind": "rect", "args": [100, 90, 111, 105]},
        {"id": 6, "kind": "rect", "args": [119, 118, 122, 121]},  # second component of object 6
        {"id": 7, "kind": "ellipse", "args": [123, 60, 8, 10]},  # clipped by the border
    ],
    [
        {"id": 1, "kind": "ellipse", "args": [64, 64, 22, 18]},  # large: reaches level 4
        {"id": 2, "kind": "rect", "args": [5, 100, 12, 107]},
        {"id": 3, "kind": "ellipse", "args": [100, 25, 6, 14]},
        {"id": 4, "kind": "rect", "args": [20, 20, 23, 23]},  # 4 x 4: the smallest object with targets
    ],
]


def label_map(shapes, size=SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    lab = np.zeros((size, size), np.int32)
    for s in shapes:
        if s["kind"] == "rect":
            x1, y1, x2, y2 = s["args"]
            inside = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
        else:
            cx, cy, rx, ry = s["args"]
            inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        lab[inside] = s["id"]
    return lab


def instance_masks(lab: np.ndarray) -> np.ndarray:
    ids = [i for i in np.unique(lab) if i != 0]
    return np.stack([lab == i for i in ids]).astype(bool)


def image_of(lab: np.ndarray, index: int) -> np.ndarray:
    """A uint8 RGB image: objects bright over a textured background, a per-object shade."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    out = np.empty((SIZE, SIZE, 3), np.float64)
    for c in range(3):
        tex = 20 * np.sin(0.35 * xx + 0.9 * c + index) * np.cos(0.27 * yy - 0.4 * c)
        out[..., c] = 40 + tex + (lab > 0) * (150 + 12 * (lab % 3) - 10 * c)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def recipe_inputs():
    """(images float32 [2, 3, S, S] normalised /255 - 0.5, per image bool masks [N, S, S])."""
    labs = [label_map(s) for s in SHAPES]
    imgs = np.stack([image_of(lab, i) for i, lab in enumerate(labs)]).astype(np.float32) / 255.0 - 0.5
    return torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))), [instance_masks(lab) for lab in labs]


#: head-layer overrides (authors' names): the heatmap bias at the code's start value, a size-head bias
#: of 3 cells (12 px boxes) and smaller output weights, so that the detections are a handful of
#: unsaturated peaks with ROIs at several levels
OVERRIDES = {"hm.2.bias": -2.19, "wh.2.bias": 3.0}
OUTPUT_SCALE = {"hm.2.weight": 0.5, "wh.2.weight": 0.1, "reg.2.weight": 0.1}


def recipe_value(name: str, shape) -> torch.Tensor:
    """The value of the authors' tensor ``name`` of ``shape``: a pure function of the two.

    BatchNorm buffers: running mean 0, var 1, counter 0. Tensors of >= 2 dims: He-normal
    (std sqrt(2 / fan_in)) from a generator seeded with crc32(name). 1-D weights (norm scales): 1 +
    0.1 N(0, 1); 1-D biases: 0.1 N(0, 1). Then :data:`OVERRIDES` / :data:`OUTPUT_SCALE`.
    """
    shape = tuple(int(s) for s in shape)
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    if name.endswith("running_mean"):
        return torch.zeros(shape)
    if name.endswith("running_var"):
        return torch.ones(shape)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    z = torch.randn(shape, generator=g)
    if len(shape) >= 2:
        v = z * math.sqrt(2.0 / math.prod(shape[1:]))
    elif name.endswith(".weight"):
        v = 1 + 0.1 * z
    else:
        v = 0.1 * z
    if name in OVERRIDES:
        v = torch.full(shape, float(OVERRIDES[name]))
    if name in OUTPUT_SCALE:
        v = v * OUTPUT_SCALE[name]
    return v


POINT_SEED = 1234  # the refinement's random points: torch's CPU generator seeded with this
K, CONF, SEG_THRESH, NMS = 500, 0.3, 0.5, 0.2  # decoder top-K and score, the README's --seg_thresh 0.5, NMS


# ------------------------------------------------------------------------------- name translation

def authors_name(ours: str) -> str:
    """Our parameter/buffer name -> the authors' (models/network.py ``Network``) name."""
    rules = [
        (r"^backbone\.", "base_network."),
        (r"^heads\.(hm|wh|reg)\.", r"\1."),
        (r"^seg\.c0_conv\.", "c0_conv."),
        (r"^seg\.combine\.", "seg_combine."),
        (r"^seg\.head\.", "seg_head."),
        (r"^seg\.point_head([01])\.", r"point_head\1.0."),
    ]
    for pat, rep in rules:
        if re.match(pat, ours):
            return re.sub(pat, rep, ours)
    return ours  # dec_c2 / dec_c3 / dec_c4 keep their names


def load_recipe(net, authors_shapes: dict[str, list[int]]) -> None:
    """Fill our network with the recipe; its tensors must map one to one onto the authors' names and
    shapes (recorded in the golden file)."""
    state = net.state_dict()
    mapped = {authors_name(k): k for k in state}
    assert len(mapped) == len(state)
    missing = sorted(set(authors_shapes) - set(mapped))
    extra = sorted(set(mapped) - set(authors_shapes))
    assert not missing and not extra, f"not in ours: {missing[:5]}; not in the authors': {extra[:5]}"
    new = {}
    for a, ours in mapped.items():
        assert list(state[ours].shape) == authors_shapes[a], (ours, a, list(state[ours].shape), authors_shapes[a])
        key = (a, tuple(authors_shapes[a]))
        if key not in _RECIPE_CACHE:
            _RECIPE_CACHE[key] = recipe_value(a, authors_shapes[a])
        new[ours] = _RECIPE_CACHE[key].to(state[ours].dtype)
    net.load_state_dict(new)


_RECIPE_CACHE: dict = {}


def calibrate_batchnorm(net, run) -> None:
    """Running statistics := the batch statistics of one train-mode pass ``run()`` of the detection
    path over both images (momentum 1), so that eval mode sees normalised features; done identically on
    both sides (the recipe's running statistics, 0 and 1, would let ResNet-50's activations grow)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    net.train()
    with torch.no_grad():
        run()
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


#: gradient norms compared (authors' names)
GRAD_PARAMS = ["base_network.conv1.weight", "base_network.layer4.2.conv3.weight", "dec_c4.up.0.weight",
               "dec_c2.cat_conv.0.weight", "hm.2.weight", "wh.0.weight", "reg.2.weight", "c0_conv.0.weight",
               "seg_combine.3.up.0.weight", "seg_combine.0.cat_conv.0.weight", "seg_head.2.weight",
               "point_head0.0.weight", "point_head1.0.weight"]


# ------------------------------------------------------------------------------------------ tests

@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def net(golden):
    from objguided.models.config import ModelConfig
    from objguided.models.network import ObjGuidedNet

    torch.set_num_threads(1)
    # clamp off: the code's focal loss (no output here saturates, so it changes nothing); ROIs one by one,
    # as the code runs them, so the refinement draws its random points in the code's order
    n = ObjGuidedNet(ModelConfig(backbone="resnet50", pretrained=None, clamp_heatmap=False, batch_rois=False))
    load_recipe(n, golden["authors_state_shapes"])
    return n


def _close(ours, theirs, rel, abs_=0.0, what=""):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    np.testing.assert_allclose(ours, theirs, rtol=rel, atol=abs_, err_msg=what)


def test_golden_file_records_the_authors_commit_and_command(golden):
    assert re.fullmatch(r"[0-9a-f]{40}", golden["authors_commit"])
    assert "golden_authors.py" in golden["command"] and "--authors" in golden["command"]
    assert golden["recipe"]["overrides"] == OVERRIDES and golden["recipe"]["point_seed"] == POINT_SEED


def test_every_tensor_of_the_authors_network_has_a_counterpart_of_the_same_shape(net, golden):
    """The architecture, tensor by tensor: ResNet-50 widths, the BatchNorm decoder (2048->1024, 1024->512,
    512->256), the InstanceNorm seg combinations without affine parameters or running statistics (none in
    the authors' state), kernel sizes of every head, both Conv1d point heads (64 and 128 inputs)."""
    shapes = golden["authors_state_shapes"]
    ours = {authors_name(k): list(v.shape) for k, v in net.state_dict().items()}
    assert ours == shapes
    assert not any(k.startswith("seg_combine") and ("running" in k or k.split(".")[-2] == "1") for k in shapes)


def test_targets_equal_the_authors_data_path(golden):
    """build_targets = the code's masks_to_bboxes_rois + generate_ground_truth: boxes of the largest
    component, the x2-x1 > 2 filter, Gaussian heatmap, ind, (w, h)/4, offsets, soft ROI targets."""
    from objguided.models.config import ModelConfig
    from objguided.models.roi import inclusive_to_cxcywh, roi_levels, sample_separable
    from objguided.models.targets import build_targets

    cfg = ModelConfig(backbone="resnet50", pretrained=None)
    _, masks = recipe_inputs()
    for m, g in zip(masks, golden["targets"]):
        t = build_targets(m, cfg)
        k = int(t["reg_mask"].sum())
        assert k == g["reg_mask_sum"] == len(g["gt_bboxes_cxcywh"])
        _close(inclusive_to_cxcywh(t["boxes"]), g["gt_bboxes_cxcywh"], 0, 0, "boxes")
        assert t["ind"][:k].tolist() == g["ind"]
        _close(t["wh"][:k], g["wh"], 1e-6, 0, "wh")
        _close(t["reg"][:k], g["reg"], 1e-6, 1e-7, "reg")
        hm = t["hm"][0]
        nz = [[int(y), int(x)] for y, x in np.argwhere(hm > 0)]
        assert nz == [v[:2] for v in g["hm_nonzero_yx_value"]]
        _close([hm[y, x] for y, x in nz], [v[2] for v in g["hm_nonzero_yx_value"]], 1e-6, 0, "hm")
        for j, box in enumerate(inclusive_to_cxcywh(t["boxes"])):
            lv = roi_levels(box)[0]
            roi = sample_separable(torch.as_tensor(t["roi_masks"][j]), lv.xs(), lv.ys()).double()
            assert list(roi.shape) == g["roi_shapes"][j]
            _close(float(roi.sum()), g["roi_sums"][j], 1e-5, 1e-5, f"roi {j} sum")
            _close(float((roi ** 2).sum()), g["roi_sumsq"][j], 1e-5, 1e-5, f"roi {j} sumsq")


def test_loss_terms_and_gradients_equal_the_authors_code(net, golden):
    """Every term of L = hm + 0.1 wh + off + 2 seg + point (CtdetLoss) to 6 digits, on the same
    weights, images and refinement points; gradient norms of backbone, decoder, heads, seg branch and
    both point heads to 0.2 %."""
    from objguided.models.targets import build_targets

    images, masks = recipe_inputs()
    targets = [{k: torch.as_tensor(v) for k, v in build_targets(m, net.cfg).items()} for m in masks]
    net.train()
    net.zero_grad(set_to_none=True)
    net.point_generator = torch.Generator().manual_seed(POINT_SEED)
    try:
        loss = net.loss(images.clone(), targets)
    finally:
        net.point_generator = None
    for term in ("hm", "wh", "off", "seg", "point", "total"):
        _close(float(loss[term].detach()), golden["losses"][term], 1e-5, 0, term)
    loss["total"].backward()
    params = {authors_name(k): p for k, p in net.named_parameters()}
    for name, want in golden["grad_norms"].items():
        _close(float(params[name].grad.norm()), want, 2e-3, 0, name)
    load_recipe(net, golden["authors_state_shapes"])  # restore the BatchNorm buffers for the next test


def test_detections_and_code_path_instances_equal_the_authors_code(net, golden):
    """Decoding (3x3 peak NMS, top 500, score > 0.3, 4 x (cell + offset, w, h)), the ROI probabilities
    of the seg branch on the predicted boxes, and the code's post-processing (unnormalised splat,
    threshold 0.5, box from pixels == 1, soft crops, mask NMS 0.2) on the same weights."""
    from objguided.models.postprocess import PostConfig, to_instances
    from objguided.models.preprocess import Frame

    images, _ = recipe_inputs()
    load_recipe(net, golden["authors_state_shapes"])
    calibrate_batchnorm(net, lambda: net.forward(images.clone()))
    post = PostConfig("code", threshold=SEG_THRESH, mask_nms_iou=NMS)
    for i, g in enumerate(golden["detections"]):
        x = images[i:i + 1].clone()
        with torch.no_grad():
            decoded = net.decode(net(x), score_threshold=CONF, top_k=K)[0]
            det = net.detect(x, score_threshold=CONF, top_k=K)[0]
        want = np.asarray(g["decoded_cxcywh_score"]).reshape(-1, 5)
        _close(decoded["cxcywh"], want[:, :4], 1e-5, 1e-4, f"image {i} decoded boxes")
        _close(decoded["scores"], want[:, 4], 1e-5, 1e-6, f"image {i} scores")
        want = np.asarray(g["with_roi_cxcywh_score"]).reshape(-1, 5)
        _close(det["cxcywh"], want[:, :4], 1e-5, 1e-4, f"image {i} boxes with a ROI")
        assert [list(q.shape) for q in det["rois"]] == g["roi_shapes"]
        _close([float(q.double().sum()) for q in det["rois"]], g["roi_sums"], 1e-4, 1e-4, f"image {i} roi sums")
        _close([float(q.max()) for q in det["rois"]], g["roi_max"], 1e-4, 1e-5, f"image {i} roi max")
        _close([float(q.min()) for q in det["rois"]], g["roi_min"], 1e-4, 1e-5, f"image {i} roi min")
        found = to_instances(det, Frame.stretch(SIZE, SIZE, SIZE), post)
        ours = []
        for mask, score, soft in found:
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            ours.append(([int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])], score, soft, int(mask.sum())))
        theirs = sorted(g["instances"], key=lambda d: -d["score"])
        assert [o[0] for o in ours] == [t["box"] for t in theirs]
        _close([o[1] for o in ours], [t["score"] for t in theirs], 1e-5, 1e-6, "instance scores")
        _close([o[2] for o in ours], [t["soft_sum"] for t in theirs], 1e-5, 1e-5, "soft areas")
        assert [o[3] for o in ours] == [t["support"] for t in theirs]
    load_recipe(net, golden["authors_state_shapes"])
