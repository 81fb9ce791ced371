"""Pins of the ROI box conventions, shared by training and inference (the authors' code @ 7d6ec9d:
``datasets/base_dataset.masks_to_bboxes_rois`` makes the training box ``[(x1+x2)/2, (y1+y2)/2,
x2-x1+1, y2-y1+1]`` from the largest component's inclusive extents, ``generate_ground_truth`` divides
it by 4 for the size/offset targets, and ``Network.crop_rois``/``bilinear_sampling`` crops *that same*
box, enlarged 1.1, at training and at the decoded box 4 * (cell + offset, w, h) at inference).

A network whose heads output exactly their targets must crop, at inference, the very grid it was
trained on: a training box one pixel narrower (or wider) than the inference box would teach the
segmentation branch a different framing from the one it sees at test time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import objguided.models.network as network
from objguided.models.config import ModelConfig
from objguided.models.network import ObjGuidedNet, decode_heads
from objguided.models.roi import cxcywh_to_inclusive, roi_levels
from objguided.models.targets import build_targets

torch.set_num_threads(1)

OBJECTS = [(8, 5, 23, 17), (30, 33, 37, 36), (41, 10, 60, 29), (2, 44, 14, 61), (50, 50, 53, 54)]  # x1 y1 x2 y2


def _masks(size=64):
    m = np.zeros((len(OBJECTS), size, size), bool)
    for i, (x1, y1, x2, y2) in enumerate(OBJECTS):
        m[i, y1:y2 + 1, x1:x2 + 1] = True
    return m


def _perfect_heads(t, size=64):
    """Head outputs equal to the targets: a 1 at each centre cell, (w, h) and offsets there."""
    s4 = size // 4
    hm = torch.zeros(1, 1, s4, s4)
    wh = torch.zeros(1, 2, s4, s4)
    reg = torch.zeros(1, 2, s4, s4)
    for k in np.flatnonzero(t["reg_mask"]):
        y, x = divmod(int(t["ind"][k]), s4)
        hm[0, 0, y, x] = 1.0
        wh[0, :, y, x] = torch.as_tensor(t["wh"][k])
        reg[0, :, y, x] = torch.as_tensor(t["reg"][k])
    return {"hm": hm, "wh": wh, "reg": reg}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None)).train()


def test_training_box_is_the_inclusive_extent_centre_and_size_plus_one(net, monkeypatch):
    """The boxes handed to the ROI cropper in training are (cx, cy, x2-x1+1, y2-y1+1) of each object."""
    seen = []
    real = network.group_rois
    monkeypatch.setattr(network, "group_rois", lambda boxes, *a, **k: seen.append(boxes) or real(boxes, *a, **k))
    t = build_targets(_masks(), net.cfg)
    net.loss(torch.zeros(1, 3, 64, 64), [{k: torch.as_tensor(v) for k, v in t.items()}])
    (boxes,) = seen
    want = [((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1 + 1, y2 - y1 + 1) for x1, y1, x2, y2 in OBJECTS]
    np.testing.assert_allclose(np.asarray(boxes[0]), want, rtol=0, atol=1e-6)


def test_a_perfect_detection_crops_the_training_grid_not_one_pixel_narrower(net, monkeypatch):
    """Heads that output their targets decode to the training boxes: same (cx, cy, w, h), hence the
    same ROI grid at every level; and ``detect``'s inclusive boxes are the objects' extents."""
    seen = []
    real = network.group_rois
    monkeypatch.setattr(network, "group_rois", lambda boxes, *a, **k: seen.append(boxes) or real(boxes, *a, **k))
    t = build_targets(_masks(), net.cfg)
    net.loss(torch.zeros(1, 3, 64, 64), [{k: torch.as_tensor(v) for k, v in t.items()}])
    train_boxes = np.asarray(seen[0][0], np.float64)
    dec = decode_heads(_perfect_heads(t), score_threshold=0.5, top_k=100)[0]["cxcywh"].double().numpy()
    order = np.lexsort((dec[:, 0], dec[:, 1]))
    dec = dec[order]
    train_boxes = train_boxes[np.lexsort((train_boxes[:, 0], train_boxes[:, 1]))]
    np.testing.assert_allclose(dec, train_boxes, rtol=0, atol=1e-5)
    for a, b in zip(dec, train_boxes):
        assert [(lv.gh, lv.gw) for lv in roi_levels(a)] == [(lv.gh, lv.gw) for lv in roi_levels(b)]
    inclusive = cxcywh_to_inclusive(dec)
    want = np.asarray(sorted(OBJECTS, key=lambda o: ((o[1] + o[3]) / 2, (o[0] + o[2]) / 2)), np.float64)
    np.testing.assert_allclose(inclusive, want, atol=1e-5)


def test_size_target_is_the_training_box_over_the_down_ratio(net):
    """generate_ground_truth(gt_bboxes / 4): wh = (x2-x1+1, y2-y1+1) / 4, offset = centre/4 - its cell."""
    t = build_targets(_masks(), net.cfg)
    for k, (x1, y1, x2, y2) in enumerate(OBJECTS):
        cx, cy = (x1 + x2) / 2 / 4, (y1 + y2) / 2 / 4
        np.testing.assert_allclose(t["wh"][k], [(x2 - x1 + 1) / 4, (y2 - y1 + 1) / 4], rtol=1e-6)
        np.testing.assert_allclose(t["reg"][k], [cx - int(cx), cy - int(cy)], atol=1e-6)
        assert t["ind"][k] == int(cy) * 16 + int(cx)


def test_roi_grid_is_1_1_times_the_box_with_int_points_spanning_it():
    """Code ``bilinear_sampling``: w, h times 1.1 (float32), ``linspace(cx - w/2, cx + w/2, int(w))``,
    the box divided by 2^i at level i, levels stop below 2 px."""
    lv = roi_levels([24.5, 28.5, 10, 20])
    assert [(v.gh, v.gw) for v in lv] == [(22, 11), (11, 5), (5, 2)]  # 2.75 x 1.375 at level 3: stop
    np.testing.assert_allclose(lv[0].xs(), np.linspace(24.5 - 5.5, 24.5 + 5.5, 11), atol=1e-5)
    np.testing.assert_allclose(lv[1].ys(), np.linspace(28.5 / 2 - 5.5, 28.5 / 2 + 5.5, 11), atol=1e-5)


def test_soft_roi_targets_are_grid_sample_with_align_corners_and_zeros_even_past_the_border():
    """The soft targets (code: ``affine_funcs.sample_masks``: ``F.grid_sample(mask, grid,
    align_corners=True)``, zero padding) for boxes that reach past the image on every side."""
    from objguided.models.roi import sample_separable

    g = torch.Generator().manual_seed(0)
    img = (torch.rand(7, 9, generator=g) > 0.5)
    xs = np.linspace(-1.7, 9.6, 23)  # past both borders (W = 9), through every pixel
    ys = np.linspace(-1.2, 7.9, 19)
    ours = sample_separable(img, xs, ys)
    grid = torch.empty(1, len(ys), len(xs), 2, dtype=torch.float64)
    grid[..., 0] = torch.as_tensor(xs / 8 * 2 - 1)[None, :]
    grid[..., 1] = torch.as_tensor(ys / 6 * 2 - 1)[:, None]
    ref = torch.nn.functional.grid_sample(img[None, None].double(), grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=True)[0, 0]
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=0)


def test_roi_crops_on_maps_two_pixels_wide_use_the_same_normalisation():
    """Deep levels of small inputs are 2 px wide: x / (W - 1) * 2 - 1 still maps pixel 0 to -1 and pixel 1
    to +1 (code: ``grids / (IW - 1) * 2 - 1``)."""
    from objguided.models.roi import LevelBox, crop_groups, crop_same_size

    feat = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # [C=1, H=2, W=2]
    lv = LevelBox(cx=0.5, cy=0.5, w=1.0, h=1.0, gw=3, gh=3)  # grid 0, 0.5, 1 on both axes
    want = torch.tensor([[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]])
    torch.testing.assert_close(crop_same_size(feat, [lv])[0, 0], want)
    torch.testing.assert_close(crop_groups([feat[None]], [([[lv]], [(0, 0)])])[0][0][0, 0], want)
