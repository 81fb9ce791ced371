"""The paper's augmentation: crop scales and centres, black padding, flip, masks follow the image."""

from __future__ import annotations

import numpy as np
import pytest

from objguided.data.augment import SCALES, augment, border, crop_params, instance_masks, warp_crop
from objguided.data.synthetic import generate


def nuclei(size=128, seed=0):
    _, image, labels = next(iter(generate("nuclei", 1, size, seed)))
    return image, labels


def test_scales_are_the_papers():
    assert SCALES == (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)


def test_crop_sides_and_centres():
    rng = np.random.default_rng(0)
    draws = [crop_params(200, 120, rng) for _ in range(2000)]
    sides = {round(s / 200, 6) for s, *_ in draws}
    assert sides == set(SCALES)  # side = max(W, H) * f, every f drawn
    cx = np.array([d[1] for d in draws])
    cy = np.array([d[2] for d in draws])
    assert cx.min() >= 64 and cx.max() < 200 - 64  # border(200) = 64
    assert cy.min() >= 32 and cy.max() < 120 - 32  # border(120) = 32
    assert cx.max() - cx.min() > 60 and cy.max() - cy.min() > 45  # uniform over the range
    flips = np.mean([d[3] for d in draws])
    assert 0.45 < flips < 0.55


def test_border_halves_for_small_images():
    assert border(512) == 128 and border(256) == 64 and border(128) == 32 and border(64) == 16


def test_identity_warp_and_zoom():
    image, labels = nuclei(128, seed=1)
    assert np.array_equal(warp_crop(image, 128, 64, 64, 128), image)
    assert np.array_equal(warp_crop(labels, 128, 64, 64, 128, order=0), labels)
    # a 64 px crop warped to 128 px doubles every length: each mask's area about 4x
    zoom = warp_crop(labels, 64, 64, 64, 128, order=0)
    inside = [i for i in np.unique(labels[34:94, 34:94])
              if i and (labels == i).sum() == (labels[34:94, 34:94] == i).sum()]
    assert inside, "no object entirely inside the centre crop"
    for i in inside:
        assert (zoom == i).sum() == pytest.approx(4 * (labels == i).sum(), rel=0.15)


def test_black_padding_outside_the_image():
    image = np.full((128, 128, 3), 255, np.uint8)
    labels = np.zeros((128, 128), np.int32)
    labels[40:80, 40:80] = 1
    for seed in range(20):
        rng = np.random.default_rng(seed)
        side, *_ = crop_params(128, 128, np.random.default_rng(seed))
        out, masks = augment(image, labels, 96, rng)
        assert out.shape == (96, 96, 3) and out.dtype == np.uint8
        if side > 128:  # the crop always reaches outside
            assert (out == 0).all(axis=2).any()
        assert (out == 255).any()


@pytest.mark.parametrize("gray", [False, True])
def test_masks_follow_the_image(gray):
    image, labels = nuclei(128, seed=3)
    # paint the objects white on black, so the image tells where the masks must be
    painted = np.where(labels > 0, 255, 0).astype(np.uint8)
    painted = painted if gray else np.repeat(painted[..., None], 3, axis=2)
    n_flipped = 0
    for seed in range(12):
        out, masks = augment(painted, labels, 128, np.random.default_rng(seed))
        assert masks.dtype == bool and masks.shape[1:] == (128, 128)
        assert out.shape == ((128, 128) if gray else (128, 128, 3))
        fg = (out if gray else out[..., 0]) > 127
        union = masks.any(axis=0)
        iou = (fg & union).sum() / max((fg | union).sum(), 1)
        assert iou > 0.9, (seed, iou)
        assert masks.reshape(len(masks), -1).any(axis=1).all()  # no empty instance
        assert (masks.sum(axis=0) <= 1).all()  # from a label map: no overlaps
        n_flipped += crop_params(128, 128, np.random.default_rng(seed))[3]
    assert 0 < n_flipped < 12


def test_flip_is_a_mirror():
    image, labels = nuclei(128, seed=1)
    for seed in range(10):
        if crop_params(128, 128, np.random.default_rng(seed))[3]:
            break
    a, ma = augment(image, labels, 100, np.random.default_rng(seed))
    b, mb = augment(image, labels, 100, np.random.default_rng(seed), flip=False)
    assert np.array_equal(a, b[:, ::-1]) and np.array_equal(ma, mb[:, :, ::-1])


def test_deterministic_given_the_generator():
    image, labels = nuclei(128)
    a, ma = augment(image, labels, 64, np.random.default_rng(7))
    b, mb = augment(image, labels, 64, np.random.default_rng(7))
    c, _ = augment(image, labels, 64, np.random.default_rng(8))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)


def test_stacked_masks_input_may_overlap():
    image = np.zeros((80, 120, 3), np.uint8)
    masks = np.zeros((2, 80, 120), bool)
    masks[0, 10:50, 10:60] = True
    masks[1, 30:70, 40:100] = True  # overlaps the first
    out, warped = augment(image, masks, 64, np.random.default_rng(0), scales=(1.0,))
    assert out.shape == (64, 64, 3)
    assert len(warped) == 2 and (warped.sum(axis=0) == 2).any()


def test_instance_masks():
    labels = np.array([[0, 3, 3], [7, 0, 3]])
    masks = instance_masks(labels)
    assert masks.shape == (2, 2, 3) and masks[0].sum() == 3 and masks[1].sum() == 1
    assert instance_masks(np.zeros((4, 5), int)).shape == (0, 4, 5)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        augment(np.zeros((10, 10), np.uint8), np.zeros((10, 11), int), 8, np.random.default_rng(0))
