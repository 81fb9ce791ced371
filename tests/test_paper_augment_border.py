"""The crop warp's border matches the authors' ``cv2.warpAffine`` (``datasets/base_dataset.py`` @ 7d6ec9d:
bilinear for the image, nearest for the masks, default ``BORDER_CONSTANT`` 0): a sample point up to half a
pixel outside the image blends with the black border (bilinear) or takes the edge pixel (nearest); it is not
blacked out. Found by mutation testing of the data path (benchmarks/results/mutation_data_path.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from objguided.data.augment import warp_crop


def test_an_upscaled_crop_blends_its_first_row_with_the_border_instead_of_blacking_it_out():
    # A 4x4 image of 200 warped to 8x8 (step 0.5): output pixel 0 samples input coordinate -0.25, between the
    # black border (weight 0.25) and pixel 0 (weight 0.75): 150, as cv2.warpAffine gives.
    image = np.full((4, 4), 200, np.uint8)
    out = warp_crop(image, side=4.0, cx=2.0, cy=2.0, size=8, order=1)
    assert out[0, 0] == 112  # both axes: 200 * 0.75 * 0.75 = 112.5, rounded half to even
    assert out[0, 4] == 150 and out[4, 0] == 150
    assert out[4, 4] == 200


def test_an_upscaled_mask_keeps_its_edge_pixels():
    mask = np.ones((4, 4), bool)
    out = warp_crop(mask, side=4.0, cx=2.0, cy=2.0, size=8, order=0)
    assert out.all()  # every output pixel's nearest input pixel lies inside the mask


@pytest.mark.parametrize("seed", range(4))
def test_the_warp_equals_opencv_warp_affine(seed):
    cv2 = pytest.importorskip("cv2")  # OpenCV comes with the peers' requirements, which CI installs
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    mask = rng.random((60, 80)) > 0.5
    side, cx, cy, size = float(rng.uniform(30, 120)), float(rng.integers(20, 60)), float(rng.integers(20, 40)), 128
    step = side / size
    start = lambda c: c - side / 2 + 0.5 * step - 0.5  # noqa: E731
    matrix = np.array([[step, 0, start(cx)], [0, step, start(cy)]], np.float64)
    flags = cv2.WARP_INVERSE_MAP
    want_image = cv2.warpAffine(image.astype(np.float32), matrix, (size, size), flags=flags | cv2.INTER_LINEAR)
    want_mask = cv2.warpAffine(mask.astype(np.uint8), matrix, (size, size), flags=flags | cv2.INTER_NEAREST)
    got_image = warp_crop(image.astype(np.float32), side, cx, cy, size, order=1)
    got_mask = warp_crop(mask, side, cx, cy, size, order=0)
    np.testing.assert_allclose(got_image, want_image, atol=0.02)  # cv2 interpolates with 5-bit fixed-point weights
    np.testing.assert_array_equal(got_mask, want_mask.astype(bool))
