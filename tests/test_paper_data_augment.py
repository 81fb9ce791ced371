"""Pins of the training augmentation's edges (issue 17's mutation run over objguided/data/augment.py).

The authors' data code @ 7d6ec9d (``datasets/base.py``, ``datasets/affine_funcs.py``): the crop is an
affine warp of the square of side max(W, H) * scale about (cx, cy) onto S x S, the image bilinear
(``cv2.warpAffine`` INTER_LINEAR, rounded back to uint8), the instance masks by nearest neighbour, black
outside; instances with no pixel left are dropped; the centre keeps ``border`` px from the edges (128
halved while it does not fit); a horizontal flip with probability 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest

from objguided.data.augment import augment, border, crop_params, instance_masks, warp_crop


def test_border_is_128_halved_until_the_centre_range_is_not_empty():
    """border(n) = 128 / 2^i for the smallest i with n - b > b, and 0 when no b >= 1 fits (n <= 2)."""
    for n in range(1, 700):
        b = 128
        while b >= 1 and n - b <= b:
            b //= 2
        assert border(n) == b and isinstance(border(n), int), n
    assert [border(n) for n in (1, 2, 3)] == [0, 0, 1]


def test_warp_samples_the_input_at_the_crops_pixel_centres():
    """Output pixel u samples input x = cx - s/2 + (u + 0.5) s / S - 0.5: on a ramp image (value = x,
    which bilinear interpolation reproduces exactly) a zoomed crop reads those coordinates back."""
    ramp = np.tile(np.arange(64, dtype=np.float32), (64, 1))
    for side, cx in ((32.0, 30.0), (48.0, 33.0), (16.0, 20.5)):
        out = warp_crop(ramp, side, cx, 32.0, 24, order=1)
        assert out.dtype == np.float32
        want = cx - side / 2 + (np.arange(24) + 0.5) * side / 24 - 0.5
        np.testing.assert_allclose(out[12], want, atol=1e-4)


def test_uint8_bilinear_rounds_and_nearest_keeps_the_dtype():
    """A half-pixel shift between 0 and 255 gives 127.5, stored as 128 (rounded, not truncated); nearest
    warps keep uint8 / int32 / bool, and a bilinear bool mask is the warp > 0.5."""
    img = np.zeros((4, 8), np.uint8)
    img[:, 1::2] = 255
    out = warp_crop(img, 8.0, 4.5, 2.0, 8, order=1)  # shifted by half a pixel
    assert out.dtype == np.uint8 and set(np.unique(out[2:6, 1:7])) == {128}  # rows 2..5 hold the image
    for a in (img, img.astype(np.int32), img > 0):
        assert warp_crop(a, 8.0, 4.0, 2.0, 8, order=0).dtype == a.dtype
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    soft = warp_crop(mask.astype(np.float32), 8.0, 4.3, 4.3, 8, order=1)
    np.testing.assert_array_equal(warp_crop(mask, 8.0, 4.3, 4.3, 8, order=1), soft > 0.5)
    assert 0 < (soft > 0.5).sum() < (soft > 0).sum()


def test_one_instance_is_one_mask_and_ids_above_255_stay_apart():
    lab = np.zeros((6, 6), np.int32)
    lab[1:3, 1:3] = 7
    m = instance_masks(lab)
    assert m.shape == (1, 6, 6) and m[0].sum() == 4
    big = np.zeros((40, 40), np.int32)
    big[5:15, 5:15] = 300  # 300 = 44 + 256: a uint8 cast would merge it with 44
    big[25:35, 25:35] = 44
    _, masks = augment(np.zeros((40, 40), np.uint8), big, 40, np.random.default_rng(0), scales=(1.0,), flip=False)
    assert len(masks) == 2 and all(100 >= k.sum() > 60 for k in masks)


def test_augment_is_crop_params_then_warps_and_stacked_masks_equal_the_label_map():
    """augment = crop_params from the same generator, the image warped bilinearly, the masks by nearest;
    stacked masks give the masks the label map gives; instances that leave the crop are dropped; no
    instance is no mask."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    lab = np.zeros((90, 120), np.int32)
    lab[40:60, 50:80] = 1
    lab[0:4, 0:4] = 2  # near a corner: left out of most crops
    lab[70:85, 10:30] = 3
    stacked = instance_masks(lab)
    for seed in range(6):
        side, cx, cy, flip = crop_params(120, 90, np.random.default_rng(seed), (0.6, 0.8))
        img, masks = augment(image, lab, 64, np.random.default_rng(seed), scales=(0.6, 0.8))
        want = warp_crop(image, side, cx, cy, 64, order=1)
        want_masks = instance_masks(warp_crop(lab, side, cx, cy, 64, order=0))
        if flip:
            want, want_masks = want[:, ::-1], want_masks[:, :, ::-1]
        np.testing.assert_array_equal(img, want)
        np.testing.assert_array_equal(masks, want_masks)
        _, from_stack = augment(image, stacked, 64, np.random.default_rng(seed), scales=(0.6, 0.8))
        np.testing.assert_array_equal(from_stack, masks)
        assert all(m.any() for m in from_stack)
    _, none = augment(image, np.zeros((0, 90, 120), bool), 64, np.random.default_rng(0))
    assert none.shape == (0, 64, 64) and none.dtype == bool


@pytest.mark.parametrize("masks", [np.zeros((2, 90, 100), bool), np.zeros((1, 1, 90, 120), bool)])
def test_masks_of_another_size_or_rank_are_refused(masks):
    with pytest.raises(ValueError, match="do not match the image"):
        augment(np.zeros((90, 120), np.uint8), masks, 64, np.random.default_rng(0))
