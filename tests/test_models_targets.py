"""Targets of the paper's network: Gaussian radius, heatmap peaks, object filtering (docs/method.md)."""

import math

import numpy as np
import pytest

from objguided.models.config import ModelConfig
from objguided.models.targets import build_targets, draw_gaussian, gaussian_kernel, gaussian_radius, largest_component


def _centernet_radius_by_hand(h, w, m=0.7):
    # the three roots of CenterNet's gaussian_radius, written out once more for the test
    r1 = ((h + w) + math.sqrt((h + w) ** 2 - 4 * w * h * (1 - m) / (1 + m))) / 2
    r2 = (2 * (h + w) + math.sqrt(4 * (h + w) ** 2 - 16 * (1 - m) * w * h)) / 2
    r3 = (-2 * m * (h + w) + math.sqrt(4 * m * m * (h + w) ** 2 - 16 * m * (m - 1) * w * h)) / 2
    return min(r1, r2, r3)


@pytest.mark.parametrize("h,w", [(10, 10), (3, 3), (4, 7), (25, 12), (1, 1)])
def test_gaussian_radius_matches_centernet_formula(h, w):
    assert gaussian_radius((h, w), 0.7) == pytest.approx(_centernet_radius_by_hand(h, w))


def test_gaussian_radius_known_values():
    # 10x10 cells: r3 = (-28 + sqrt(784 + 336)) / 2 = 2.7332...
    assert gaussian_radius((10, 10)) == pytest.approx((-28 + math.sqrt(1120)) / 2)
    assert int(gaussian_radius((10, 10))) == 2
    assert int(gaussian_radius((3, 3))) == 0


def test_gaussian_kernel_sigma_is_diameter_over_6():
    g = gaussian_kernel(2)  # diameter 5, sigma 5/6
    assert g.shape == (5, 5) and g[2, 2] == 1.0
    assert g[2, 3] == pytest.approx(math.exp(-1 / (2 * (5 / 6) ** 2)))
    assert g[0, 0] == pytest.approx(math.exp(-8 / (2 * (5 / 6) ** 2)))


def test_draw_gaussian_clips_at_border_and_takes_max():
    hm = np.zeros((6, 6), np.float32)
    draw_gaussian(hm, (0, 0), 2)
    assert hm[0, 0] == 1 and hm[0, 1] == pytest.approx(math.exp(-1 / (2 * (5 / 6) ** 2)), rel=1e-6)
    hm[5, 5] = 0.9
    draw_gaussian(hm, (5, 5), 0)
    assert hm[5, 5] == 1.0


def test_build_targets_peaks_sizes_offsets():
    cfg = ModelConfig(backbone="resnet18", pretrained=None, max_objects=5)
    s = 64
    masks = np.zeros((3, s, s), bool)
    masks[0, 8:18, 12:24] = True  # x 12..23, y 8..17: centre (17.5, 12.5), w 12, h 10
    masks[1, 40:42, 40:50] = True  # 2 rows: y2 - y1 = 1 -> no target (heatmap negative)
    masks[2, 30:40, 30:36] = True  # x 30..35, y 30..39
    masks[2, 50:52, 50:52] = True  # a second, smaller component: dropped
    t = build_targets(masks, cfg)
    assert t["hm"].shape == (1, 16, 16) and t["hm"].dtype == np.float32
    np.testing.assert_array_equal(t["boxes"], [[12, 8, 23, 17], [30, 30, 35, 39]])
    assert t["roi_masks"].shape == (2, s, s)
    assert t["roi_masks"][1].sum() == 60 and not t["roi_masks"][1, 50, 50]
    assert t["reg_mask"].tolist() == [1, 1, 0, 0, 0]
    np.testing.assert_allclose(t["wh"][0], [12 / 4, 10 / 4])
    np.testing.assert_allclose(t["reg"][0], [17.5 / 4 - 4, 12.5 / 4 - 3])
    assert t["ind"][0] == 3 * 16 + 4
    # peaks exactly 1 at the centre cells, nowhere else
    assert t["hm"][0, 3, 4] == 1.0 and t["hm"][0, 8, 8] == 1.0  # object 2: centre (32.5, 34.5) / 4 -> cell (8, 8)
    assert (t["hm"] == 1).sum() == 2
    # radius of object 0: gaussian_radius((ceil 2.5, ceil 3), 0.7) -> int
    r = max(0, int(gaussian_radius((3, 3))))
    assert r == 0 and t["hm"][0, 3, 5] == 0  # radius 0: a single cell


def test_build_targets_radius_one_object():
    cfg = ModelConfig(backbone="resnet18", pretrained=None)
    masks = np.zeros((1, 128, 128), bool)
    masks[0, 20:60, 20:60] = True  # 40 px -> 10 cells, radius int(2.73) = 2
    t = build_targets(masks, cfg)
    c = (int(39.5 / 4), int(39.5 / 4))
    hm = t["hm"][0]
    assert hm[c[1], c[0]] == 1
    np.testing.assert_allclose(hm[c[1] - 2:c[1] + 3, c[0] - 2:c[0] + 3], gaussian_kernel(2), rtol=1e-6)
    assert hm[c[1], c[0] + 3] == 0


def test_max_objects_caps_detection_targets_not_mask_targets():
    cfg = ModelConfig(backbone="resnet18", pretrained=None, max_objects=2)
    masks = np.zeros((3, 32, 32), bool)
    for i in range(3):
        masks[i, 2 + 10 * i:8 + 10 * i, 2:8] = True
    t = build_targets(masks, cfg)
    assert t["reg_mask"].sum() == 2 and t["wh"].shape == (2, 2)
    assert len(t["boxes"]) == 3 and len(t["roi_masks"]) == 3
    assert (t["hm"] == 1).sum() == 2


def test_largest_component_is_4_connected():
    m = np.zeros((6, 6), bool)
    m[0, 0] = m[1, 1] = m[2, 2] = True  # diagonal: three components under 4-connectivity
    m[4:6, 3:6] = True
    crop, (r0, c0) = largest_component(m)
    assert (r0, c0) == (4, 3) and crop.shape == (2, 3) and crop.all()
    assert largest_component(np.zeros((3, 3), bool)) is None
