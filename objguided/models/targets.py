"""Training targets of the paper's network: CenterNet heatmap/size/offset and the ROI mask targets.

Facts implemented here (docs/method.md, "checked line by line"):

* each object is reduced to its largest 4-connected component (ties: the first in raster order);
* only objects with ``x2 - x1 > 2`` and ``y2 - y1 > 2`` (inclusive pixel extents of that component,
  in the network input frame) get targets; smaller ones are left as heatmap negatives;
* box = (centre ``((x1+x2)/2, (y1+y2)/2)``, ``w = x2-x1+1``, ``h = y2-y1+1``) divided by the down ratio 4;
* Gaussian radius = CenterNet's ``gaussian_radius((ceil h, ceil w), 0.7)``, truncated to an integer
  >= 0, sigma = diameter / 6, drawn (element-wise max) at the integer centre cell ``int(centre)``;
* at most ``max_objects`` detection targets (the first ones, in input order); every kept object gets a
  mask target (no cap).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from objguided.models.config import ModelConfig


def gaussian_radius(det_size: tuple[float, float], min_overlap: float = 0.7) -> float:
    """CenterNet's ``gaussian_radius((h, w), min_overlap)``: the smallest of its three quadratic roots.

    Written from CenterNet's formula, including its well-known simplification (each root divided by 2,
    not by 2a), because that is the radius the authors' targets use.

    >>> round(gaussian_radius((10, 10)), 4)
    2.7332
    """
    height, width = det_size
    a1, b1, c1 = 1.0, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4.0, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def gaussian_kernel(radius: int) -> np.ndarray:
    """(2r+1)x(2r+1) Gaussian, peak 1, sigma = (2r+1)/6; values under eps * max set to 0 (CenterNet)."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    return g


def draw_gaussian(heatmap: np.ndarray, center: tuple[int, int], radius: int) -> np.ndarray:
    """Draw (element-wise max) a Gaussian of ``radius`` centred at integer ``center = (x, y)``; clipped."""
    g = gaussian_kernel(radius)
    x, y = int(center[0]), int(center[1])
    h, w = heatmap.shape
    left, right = min(x, radius), min(w - x, radius + 1)
    top, bottom = min(y, radius), min(h - y, radius + 1)
    region = heatmap[y - top:y + bottom, x - left:x + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    if min(patch.shape) > 0 and min(region.shape) > 0:
        np.maximum(region, patch.astype(heatmap.dtype), out=region)
    return heatmap


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Largest 4-connected component of a bool mask, as (crop, (row0, col0)) of its tight box, or None.

    Ties in area go to the component met first in raster order.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mask[r0:r1, c0:c1]
    lab, n = ndimage.label(crop)  # default structure: 4-connectivity
    if n > 1:
        best = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
        crop = lab == best
        rr = np.flatnonzero(crop.any(axis=1))
        cc = np.flatnonzero(crop.any(axis=0))
        crop = crop[rr[0]:rr[-1] + 1, cc[0]:cc[-1] + 1]
        r0, c0 = r0 + rr[0], c0 + cc[0]
    return np.ascontiguousarray(crop), (int(r0), int(c0))


def build_targets(masks: np.ndarray, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Targets of one image from its instance masks in the network input frame.

    ``masks``: bool [N, S, S] (S = input size, divisible by 4; non-square [N, H, W] works too).

    Returns numpy arrays (K = ``cfg.max_objects``, M = objects kept, S4 = S / 4):

    * ``hm`` float32 [1, S4, S4]: Gaussians at the kept objects' centre cells (first K objects);
    * ``wh`` float32 [K, 2]: (w, h) / 4; ``reg`` float32 [K, 2]: centre/4 minus its integer cell;
    * ``ind`` int64 [K]: ``cy_int * S4 + cx_int``; ``reg_mask`` uint8 [K]: 1 for the filled rows;
    * ``boxes`` float32 [M, 4]: (x1, y1, x2, y2) inclusive pixel extents of each kept object's largest
      component in the input frame (the ROI is cropped about ``((x1+x2)/2, (y1+y2)/2)`` with size
      ``(x2-x1+1, y2-y1+1)`` times 1.1); ``roi_masks`` bool [M, S, S]: that largest component.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, S, S], got shape {masks.shape}")
    n, height, width = masks.shape
    r = cfg.down_ratio
    if height % r or width % r:
        raise ValueError(f"input size {height}x{width} is not divisible by the down ratio {r}")
    h4, w4 = height // r, width // r
    kmax = cfg.max_objects
    hm = np.zeros((1, h4, w4), np.float32)
    wh = np.zeros((kmax, 2), np.float32)
    reg = np.zeros((kmax, 2), np.float32)
    ind = np.zeros(kmax, np.int64)
    reg_mask = np.zeros(kmax, np.uint8)
    boxes, rois = [], []
    for i in range(n):
        found = largest_component(masks[i].astype(bool, copy=False))
        if found is None:
            continue
        crop, (r0, c0) = found
        y1, x1 = r0, c0
        y2, x2 = r0 + crop.shape[0] - 1, c0 + crop.shape[1] - 1
        if not (x2 - x1 > 2 and y2 - y1 > 2):
            continue
        full = np.zeros((height, width), bool)
        full[y1:y2 + 1, x1:x2 + 1] = crop
        k = len(boxes)
        boxes.append((x1, y1, x2, y2))
        rois.append(full)
        if k >= kmax:
            continue
        cx = np.float32((x1 + x2) / 2) / np.float32(r)
        cy = np.float32((y1 + y2) / 2) / np.float32(r)
        bw = np.float32(x2 - x1 + 1) / np.float32(r)
        bh = np.float32(y2 - y1 + 1) / np.float32(r)
        radius = max(0, int(gaussian_radius((math.ceil(bh), math.ceil(bw)), 0.7)))
        cx_i, cy_i = int(cx), int(cy)
        draw_gaussian(hm[0], (cx_i, cy_i), radius)
        wh[k] = (bw, bh)
        ind[k] = cy_i * w4 + cx_i
        reg[k] = (cx - cx_i, cy - cy_i)
        reg_mask[k] = 1
    return {
        "hm": hm, "wh": wh, "reg": reg, "ind": ind, "reg_mask": reg_mask,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "roi_masks": np.stack(rois) if rois else np.zeros((0, height, width), bool),
    }
