"""The paper's training augmentation: a random square crop warped to the input size, and a flip.

For an image of width W and height H, and an input size S:

1. **Side** ``s = max(W, H) * f`` with ``f`` drawn uniformly from ``SCALES`` = {0.6, 0.7, ..., 1.3}
   (so a crop may reach past the image: the outside is black).
2. **Centre** ``(cx, cy)``, integers drawn uniformly from ``[bx, W - bx)`` and ``[by, H - by)`` with
   ``bx = border(W)``, ``by = border(H)``: the authors keep the centre ``BORDER`` = 128 px from the
   border, halved (64, 32, ...) until the range is not empty, i.e. ``border(n) = 128 / 2^i`` for the
   smallest ``i`` with ``n - 128 / 2^i > 128 / 2^i``. This scales with the image size: 128 px for images
   over 256 px, 64 px for 129-256 px, 32 px for 65-128 px, and so on (for a 128 px image the centre
   stays in [32, 96)). The authors' code swaps the x and y ranges for non-square images; we do not.
3. **Warp** of the square ``[cx - s/2, cx + s/2] x [cy - s/2, cy + s/2]`` onto S x S (pixel centres
   aligned: output pixel u samples input ``cx - s/2 + (u + 0.5) s / S - 0.5``): the image bilinearly
   with black padding, the instance masks by nearest neighbour. Instances that end up with no pixel
   are dropped.
4. **Horizontal flip** with probability 0.5.

Everything is drawn from the ``numpy.random.Generator`` passed in, so a seeded generator gives the
same sample every time.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SCALES = tuple(np.round(np.arange(0.6, 1.31, 0.1), 1).tolist())
BORDER = 128
FLIP_PROBABILITY = 0.5


def instance_masks(labels: np.ndarray) -> np.ndarray:
    """A label map (0 = background) -> bool masks [N, H, W], one per instance id in increasing id order.

    >>> instance_masks(np.array([[0, 2], [5, 2]])).astype(int).tolist()
    [[[0, 1], [0, 1]], [[0, 0], [1, 0]]]
    """
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if ids.size == 0:
        return np.zeros((0, *labels.shape), bool)
    return labels[None] == ids[:, None, None]


def border(n: int, base: int = BORDER) -> int:
    """The centre's minimum distance from the border of an image side of ``n`` px (see module doc).

    >>> [border(n) for n in (512, 257, 256, 128, 96, 20, 2)]
    [128, 128, 64, 32, 32, 8, 0]
    """
    b = int(base)
    while b > 0 and n - b <= b:
        b //= 2
    return b


def crop_params(width: int, height: int, rng: np.random.Generator,
                scales=SCALES) -> tuple[float, int, int, bool]:
    """Draw (side, cx, cy, flip) for an image of ``width`` x ``height``."""
    side = max(width, height) * float(rng.choice(np.asarray(scales, float)))
    bx, by = border(width), border(height)
    cx = int(rng.integers(bx, width - bx)) if width - bx > bx else width // 2
    cy = int(rng.integers(by, height - by)) if height - by > by else height // 2
    flip = bool(rng.random() < FLIP_PROBABILITY)
    return side, cx, cy, flip


def _warp_2d(channel: np.ndarray, side: float, cx: float, cy: float, size: int, order: int) -> np.ndarray:
    step = side / size
    start = lambda c: c - side / 2 + 0.5 * step - 0.5  # noqa: E731  (input coordinate of output pixel 0)
    return ndi.affine_transform(channel, (step, step), offset=(start(cy), start(cx)), output_shape=(size, size),
                                # "grid-constant", not "constant": samples within half a pixel outside the
                                # image blend with the black border as cv2.warpAffine's BORDER_CONSTANT does
                                # (the authors' warp); "constant" blacks out the whole first row and column
                                order=order, mode="grid-constant", cval=0, prefilter=False)


def warp_crop(image: np.ndarray, side: float, cx: float, cy: float, size: int, order: int = 1) -> np.ndarray:
    """The square of ``side`` px centred at (cx, cy) resampled to ``size`` x ``size`` (black outside).

    ``order`` 1 = bilinear, 0 = nearest; a uint8 image stays uint8 (rounded), a bool mask stays bool.
    """
    dtype = image.dtype
    work = image.astype(np.float32) if order > 0 else (image.astype(np.uint8) if dtype == np.bool_ else image)
    if work.ndim == 2:
        out = _warp_2d(work, side, cx, cy, size, order)
    else:
        out = np.stack([_warp_2d(work[..., c], side, cx, cy, size, order) for c in range(work.shape[2])], axis=2)
    if dtype == np.bool_:
        return out > (0.5 if order > 0 else 0)
    if np.issubdtype(dtype, np.integer) and order > 0:
        info = np.iinfo(dtype)
        return np.clip(np.round(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)


def augment(image: np.ndarray, instances: np.ndarray, size: int, rng: np.random.Generator,
            scales=SCALES, flip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One training sample: (image uint8 [S, S] or [S, S, 3], masks bool [N, S, S]).

    ``instances`` is a label map [H, W] (0 = background) or bool masks [N, H, W] (which may overlap).
    Instances that leave the crop entirely are dropped.
    """
    height, width = image.shape[:2]
    if instances.ndim == 2:
        if instances.shape != (height, width):
            raise ValueError(f"augment: label map {instances.shape} and image {image.shape[:2]} differ in size")
    elif instances.ndim != 3 or instances.shape[1:] != (height, width):
        raise ValueError(f"augment: masks {instances.shape} do not match the image {image.shape[:2]}")
    side, cx, cy, do_flip = crop_params(width, height, rng, scales)
    out = warp_crop(image, side, cx, cy, size, order=1)
    if instances.ndim == 2:  # nearest-warp the label map once: the same as warping each mask
        masks = instance_masks(warp_crop(instances.astype(np.int32), side, cx, cy, size, order=0))
    else:
        masks = np.stack([warp_crop(m, side, cx, cy, size, order=0) for m in instances.astype(bool)]) \
            if len(instances) else np.zeros((0, size, size), bool)
        masks = masks[masks.reshape(len(masks), -1).any(axis=1)] if len(masks) else masks
    if flip and do_flip:
        out = out[:, ::-1].copy()
        masks = masks[:, :, ::-1].copy()
    return out, masks


__all__ = ["augment", "instance_masks", "crop_params", "warp_crop", "border", "SCALES", "BORDER"]
