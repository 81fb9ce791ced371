"""Pins of the training targets against the authors' data path (github
yijingru/ObjGuided-Instance-Segmentation @ 7d6ec9d: ``datasets/base_dataset.masks_to_bboxes_rois``,
``datasets/pre_proc.generate_ground_truth``, ``datasets/draw_gaussian.py``, CenterNet's).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from objguided.models.config import ModelConfig
from objguided.models.roi import group_rois
from objguided.models.targets import build_targets, draw_gaussian, gaussian_kernel, gaussian_radius

CFG = ModelConfig(backbone="resnet18", pretrained=None)


def _centernet_radius(h, w, m=0.7):
    """CenterNet's ``gaussian_radius`` ((h, w), min_overlap): the three roots, each divided by 2."""
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * m, -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def test_gaussian_radius_equals_centernets_over_every_box_of_a_512_input():
    """Every (ceil h, ceil w) a 512 input can give (1..128 heatmap cells): the same integer radius as
    CenterNet's formula (``radius = max(0, int(gaussian_radius((ceil(h), ceil(w)))))``)."""
    sizes = range(1, 129)
    ours = np.array([[int(gaussian_radius((h, w))) for w in sizes] for h in sizes])
    ref = np.array([[int(_centernet_radius(h, w)) for w in sizes] for h in sizes])
    assert np.array_equal(ours, ref)
    for h, w in ((1, 1), (3, 7), (40, 13), (128, 128)):
        assert gaussian_radius((h, w)) == pytest.approx(_centernet_radius(h, w), rel=1e-12)


def test_gaussian_is_clipped_at_every_border_like_centernets_draw_umich_gaussian():
    """Centres at the four borders: the kernel's visible part, element-wise max with what is there."""
    for cx, cy in ((0, 0), (5, 5), (0, 5), (5, 0), (4, 1)):
        hm = np.zeros((6, 6), np.float32)
        hm[2, 2] = 0.5
        draw_gaussian(hm, (cx, cy), 2)
        g = gaussian_kernel(2)
        ref = np.zeros((6, 6))
        for y in range(6):
            for x in range(6):
                dy, dx = y - cy, x - cx
                if abs(dy) <= 2 and abs(dx) <= 2:
                    ref[y, x] = g[dy + 2, dx + 2]
        ref[2, 2] = max(ref[2, 2], 0.5)
        np.testing.assert_allclose(hm, ref, rtol=1e-6, err_msg=str((cx, cy)))


def test_only_objects_spanning_more_than_3_px_both_ways_get_targets():
    """``if y2 - y1 > 2 and x2 - x1 > 2`` (inclusive extents): 3 px wide or high is not enough, 4 px is."""
    m = np.zeros((4, 64, 64), bool)
    m[0, 10:20, 10:13] = True  # 3 columns: x2 - x1 = 2 -> dropped
    m[1, 30:33, 10:20] = True  # 3 rows -> dropped
    m[2, 40:44, 40:44] = True  # 4 x 4 -> kept
    m[3, 2:12, 50:54] = True  # 10 x 4 -> kept
    t = build_targets(m, CFG)
    np.testing.assert_array_equal(t["boxes"], [[40, 40, 43, 43], [50, 2, 53, 11]])
    assert t["reg_mask"].sum() == 2 and len(t["roi_masks"]) == 2


def test_empty_masks_and_the_object_cap_skip_only_themselves():
    """An empty mask is skipped and the objects after it still get targets; past the 500-object cap
    (here 2) the detection targets stop but every object keeps its mask target."""
    m = np.zeros((5, 64, 64), bool)
    m[1, 4:12, 4:12] = True  # m[0] is empty
    m[2, 20:28, 4:12] = True
    m[3, 36:44, 4:12] = True
    m[4, 52:60, 4:12] = True
    t = build_targets(m, ModelConfig(backbone="resnet18", pretrained=None, max_objects=2))
    assert len(t["boxes"]) == 4 and len(t["roi_masks"]) == 4 and t["reg_mask"].sum() == 2
    assert (t["hm"] == 1).sum() == 2
    with pytest.raises(ValueError, match="divisible"):
        build_targets(np.zeros((1, 64, 62), bool), CFG)  # the heatmap is the input / 4
    with pytest.raises(ValueError, match="divisible"):
        build_targets(np.zeros((1, 62, 64), bool), CFG)
    none = build_targets(np.zeros((0, 64, 64), bool), CFG)
    assert none["roi_masks"].shape == (0, 64, 64) and none["boxes"].shape == (0, 4) and none["reg_mask"].sum() == 0


def test_rois_under_2_px_are_skipped_and_the_rest_kept_in_order():
    """Code ``crop_rois``: a ROI whose enlarged box is under 2 px is skipped (``continue``); the next
    ones are cropped. One by one (``batch=False``), every ROI is its own group, in image/box order."""
    boxes = [np.array([[10, 10, 1.0, 8], [20, 20, 8, 8], [30, 30, 1.5, 1.5], [40, 40, 8, 8]], np.float32),
             np.array([[12, 12, 9, 9]], np.float32)]
    groups = group_rois(boxes, 1.1, 2.0, batch=False)
    assert [m for _, ms in groups for m in ms] == [(0, 1), (0, 3), (1, 0)]
    assert all(len(ms) == 1 for _, ms in groups)
    batched = group_rois(boxes, 1.1, 2.0, batch=True)
    assert sorted(m for _, ms in batched for m in ms) == [(0, 1), (0, 3), (1, 0)]
    assert sorted(len(ms) for _, ms in batched) == [1, 2]  # the two 8 px ROIs share one batch
