"""Pins of the paper's training augmentation as the method's data path runs it (the authors' code @
7d6ec9d: ``datasets/transforms.random_flip`` flips the image *and* the masks, ``image[:, ::-1, :]`` and
``gt_masks[:, :, ::-1]``, before the crop is warped; the masks are warped nearest, the image
bilinearly, with the same affine matrix).

The image used here paints every object with its own gray level on a black background, so the image
itself says where each mask must be after the crop, the warp and the flip.
"""

from __future__ import annotations

import numpy as np
import torch

import objguided_methods as methods
from objguided.data.augment import augment, crop_params
from objguided_methods.objguided import TrainSamples, model_config

torch.set_num_threads(1)

SHADES = {1: 90, 2: 140, 3: 190, 4: 240}


def painted(size=96):
    """An asymmetric label map (an L shape, a bar, two blocks on the left) and its painted image."""
    lab = np.zeros((size, size), np.int32)
    lab[10:40, 8:16] = 1
    lab[32:40, 8:34] = 1  # the L
    lab[60:70, 20:80] = 2
    lab[14:26, 50:62] = 3
    lab[76:90, 6:18] = 4
    img = np.zeros((size, size), np.uint8)
    for i, v in SHADES.items():
        img[lab == i] = v
    return img, lab


def flipping_seeds(size, n=12, scales=(0.8,)):
    return [s for s in range(n) if crop_params(size, size, np.random.default_rng(s), scales)[3]]


def test_masks_are_flipped_with_the_image():
    """For every seed that flips, the warped masks sit on the pixels of their own shade; and the flipped
    sample is the mirror of the same crop without the flip, image and masks alike."""
    img, lab = painted()
    seeds = flipping_seeds(96)
    assert seeds
    for seed in seeds:
        out, masks = augment(img, lab, 96, np.random.default_rng(seed), scales=(0.8,))
        ref, ref_masks = augment(img, lab, 96, np.random.default_rng(seed), scales=(0.8,), flip=False)
        assert np.array_equal(out, ref[:, ::-1]) and np.array_equal(masks, ref_masks[:, :, ::-1])
        assert not np.array_equal(out, ref)  # the flip did happen
        fg = out > 45  # half the darkest shade
        union = masks.any(0)
        assert (fg & union).sum() / (fg | union).sum() > 0.85, seed
        found = []  # each instance lies on its own shade (edge pixels blend): every mask keeps its identity
        for m in masks:
            if min(np.ptp(np.flatnonzero(m.any(0))), np.ptp(np.flatnonzero(m.any(1)))) < 3:
                continue  # a sliver at the crop's edge: all its pixels blend with the black outside
            hits = {v: int((np.abs(out[m].astype(int) - v) <= 2).sum()) for v in SHADES.values()}
            best = max(hits, key=hits.get)
            assert hits[best] > 0, (seed, hits)
            found.append(best)
        assert len(set(found)) == len(found), (seed, found)


def test_method_training_samples_have_targets_on_the_objects_of_the_image():
    """The objguided method's data path (augment -> RGB -> /255 - 0.5 -> build_targets): every ROI mask
    target lies on the bright pixels of the very tensor the network is fed, flipped or not."""
    img, lab = painted()
    m = methods.get("objguided")
    cfg = m.make_config({"backbone": "resnet18", "pretrained": None, "num_workers": 0, "input_size": 64})
    data = TrainSamples([(img, lab)], cfg, model_config(cfg))
    flipped = 0
    for seed in range(8):
        tensor, t = data[(0, seed)]
        flipped += crop_params(96, 96, np.random.default_rng(seed))[3]
        gray = tensor[0].numpy() + 0.5  # channel 0, back to [0, 1]
        rois = t["roi_masks"].numpy()
        assert len(rois) >= 3
        for r in rois:
            assert np.median(gray[r]) > 0.3, seed
        union = rois.any(0)
        bright = gray > 0.3
        assert (bright & union).sum() / max((bright | union).sum(), 1) > 0.8, seed
        # the heatmap's peaks sit at the centres of the boxes of those very masks
        s4 = t["hm"].shape[-1]
        for k in np.flatnonzero(t["reg_mask"].numpy()):
            y, x = divmod(int(t["ind"][k]), s4)
            rows, cols = np.flatnonzero(rois[k].any(1)), np.flatnonzero(rois[k].any(0))
            assert (x, y) == (int((cols[0] + cols[-1]) / 2 / 4), int((rows[0] + rows[-1]) / 2 / 4)), seed
    assert 0 < flipped < 8
