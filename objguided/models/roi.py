"""ROI geometry and multi-level ROI cropping (the object-guided segmentation branch's input).

Conventions (the authors' code, docs/method.md):

* a box is (cx, cy, w, h) in input pixels, pixel centres at integer coordinates; a ground-truth box with
  inclusive extents x1..x2 has cx = (x1+x2)/2 and w = x2-x1+1 (:func:`inclusive_to_cxcywh`);
* level i (i = 0..4, scale s = 2^i) divides the box by s, then enlarges w and h by 1.1 (float32
  arithmetic, as the code does); the grid has int(w_i) x int(h_i) points, x = linspace(cx_i - w_i/2,
  cx_i + w_i/2, int(w_i)) (likewise y), in the level's own pixel coordinates (level pixel j sits at
  input pixel j*s);
* levels stop at the first one where w_i or h_i is under 2 (``min_roi_size``); a box whose level 0
  fails is skipped altogether ("omit ROIs smaller than 2 pixels");
* sampling is bilinear, align_corners=True, zero padding: normalised x = x / (W_i - 1) * 2 - 1.

Batched cropping stacks the grids of n ROIs of one size into one grid_sample call; the result is the
same as cropping them one by one (each output point depends only on its own coordinates).

Grids are float32 (float64 maps: float64) and sampling runs at that precision whatever the map's dtype:
under mixed precision a float16 grid moves points by up to 1/16 px on a 512 map (a bfloat16 one by up to
1/2 px), so an AMP run would crop other places than a float32 run. The crops come out float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

N_LEVELS = 5


def inclusive_to_cxcywh(boxes) -> np.ndarray:
    """[n,4] (x1, y1, x2, y2) inclusive pixel extents -> float32 [n,4] (cx, cy, w, h)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                     b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1], axis=1).astype(np.float32)


def cxcywh_to_inclusive(boxes) -> np.ndarray:
    """Inverse of :func:`inclusive_to_cxcywh`: (cx, cy, w, h) -> (cx-(w-1)/2, cy-(h-1)/2, cx+(w-1)/2, ...)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack([b[:, 0] - (b[:, 2] - 1) / 2, b[:, 1] - (b[:, 3] - 1) / 2,
                     b[:, 0] + (b[:, 2] - 1) / 2, b[:, 1] + (b[:, 3] - 1) / 2], axis=1).astype(np.float32)


@dataclass(frozen=True)
class LevelBox:
    """One ROI at one level: the enlarged box in the level's pixel coordinates and its grid size."""

    cx: float
    cy: float
    w: float  # enlarged width at this level (the grid spans cx - w/2 .. cx + w/2)
    h: float
    gw: int  # grid points across = int(w)
    gh: int

    def xs(self) -> np.ndarray:
        return np.linspace(self.cx - self.w / 2, self.cx + self.w / 2, self.gw)

    def ys(self) -> np.ndarray:
        return np.linspace(self.cy - self.h / 2, self.cy + self.h / 2, self.gh)

    def span(self) -> tuple[float, float, float, float]:
        """(x first, y first, x last, y last) grid-point coordinates."""
        return (self.cx - self.w / 2, self.cy - self.h / 2, self.cx + self.w / 2, self.cy + self.h / 2)


def roi_levels(box, enlarge: float = 1.1, min_size: float = 2.0, n_levels: int = N_LEVELS) -> list[LevelBox]:
    """The levels of one (cx, cy, w, h) box (level-0 = input pixels); empty when level 0 is too small."""
    b = np.asarray(box, np.float32).reshape(4)
    out = []
    for i in range(n_levels):
        s = np.float32(2 ** i)
        cx, cy, w, h = (b / s).astype(np.float32)
        w = np.float32(w * np.float32(enlarge))
        h = np.float32(h * np.float32(enlarge))
        if w < min_size or h < min_size:
            break
        out.append(LevelBox(float(cx), float(cy), float(w), float(h), int(w), int(h)))
    return out


def level_key(levels: list[LevelBox]) -> tuple:
    """ROIs with equal keys have grids of equal size at every level, so they can share one batch."""
    return tuple((lv.gh, lv.gw) for lv in levels)


def sampling_dtype(feat: Tensor) -> torch.dtype:
    """The dtype ROI grids and sampling use for a map: float32, or float64 for a float64 map."""
    return torch.promote_types(feat.dtype, torch.float32)


def _norm_grid(levels: list[LevelBox], height: int, width: int, device, dtype) -> Tensor:
    """Stacked align_corners=True grids of same-size ROIs: [1, n*gh, gw, 2]."""
    xs = np.stack([lv.xs() for lv in levels])  # [n, gw]
    ys = np.stack([lv.ys() for lv in levels])  # [n, gh]
    gx = xs / max(width - 1, 1) * 2 - 1
    gy = ys / max(height - 1, 1) * 2 - 1
    n, gw = gx.shape
    gh = gy.shape[1]
    grid = np.empty((n, gh, gw, 2), np.float64)
    grid[..., 0] = gx[:, None, :]
    grid[..., 1] = gy[:, :, None]
    return torch.as_tensor(grid.reshape(1, n * gh, gw, 2), dtype=dtype, device=device)


def crop_same_size(feat: Tensor, levels: list[LevelBox]) -> Tensor:
    """Crop n same-size ROIs from one image's map ``feat`` [C, H, W] (or [1, C, H, W]) -> [n, C, gh, gw].

    One grid_sample call (bilinear, zero padding, align_corners=True) over the stacked grids.
    """
    if feat.dim() == 3:
        feat = feat.unsqueeze(0)
    _, c, height, width = feat.shape
    gh, gw = levels[0].gh, levels[0].gw
    if any((lv.gh, lv.gw) != (gh, gw) for lv in levels):
        raise ValueError("crop_same_size: ROIs of different grid sizes")
    dtype = sampling_dtype(feat)
    grid = _norm_grid(levels, height, width, feat.device, dtype)
    out = F.grid_sample(feat.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(c, len(levels), gh, gw).permute(1, 0, 2, 3)


def sample_separable(img: Tensor, xs, ys) -> Tensor:
    """Bilinear sample of a 2-D map ``img`` [H, W] on the separable grid ys x xs (pixel coordinates),
    zero outside: the same numbers as grid_sample(align_corners=True, zeros) at those points.

    Used for the soft ROI targets (the GT mask sampled on the ROI grid) without materialising full-size
    float masks.
    """
    height, width = img.shape

    def weights(coords, size):
        c = torch.as_tensor(np.asarray(coords, np.float64))
        c0 = torch.floor(c)
        f = (c - c0).to(torch.float32)
        i0 = c0.long()
        i1 = i0 + 1
        w0 = torch.where((i0 >= 0) & (i0 < size), 1 - f, torch.zeros_like(f))
        w1 = torch.where((i1 >= 0) & (i1 < size), f, torch.zeros_like(f))
        return i0.clamp(0, size - 1), i1.clamp(0, size - 1), w0, w1

    y0, y1, wy0, wy1 = weights(ys, height)
    x0, x1, wx0, wx1 = weights(xs, width)
    dev = img.device
    f32 = torch.float32  # index rows first: never converts the whole (bool) mask
    rows = img[y0.to(dev)].to(f32) * wy0.to(dev)[:, None] + img[y1.to(dev)].to(f32) * wy1.to(dev)[:, None]  # [gh, W]
    return rows[:, x0.to(dev)] * wx0.to(dev)[None, :] + rows[:, x1.to(dev)] * wx1.to(dev)[None, :]


def group_rois(per_image_boxes: list, enlarge: float, min_size: float, batch: bool = True):
    """Plan the ROI batches of a list of images.

    ``per_image_boxes``: per image an array [m, 4] of (cx, cy, w, h) boxes in input pixels.
    Returns a list of groups ``(levels_per_roi, members)``; ``members`` = [(image index, box index)];
    all ROIs of a group share the grid size at every level (one group per ROI when ``batch`` is False).
    Boxes whose level 0 is under ``min_size`` appear in no group.
    """
    groups: dict = {}
    for b, boxes in enumerate(per_image_boxes):
        for j, box in enumerate(np.asarray(boxes, np.float32).reshape(-1, 4)):
            levels = roi_levels(box, enlarge, min_size)
            if not levels:
                continue
            key = level_key(levels) if batch else (b, j)
            groups.setdefault(key, ([], []))
            groups[key][0].append(levels)
            groups[key][1].append((b, j))
    return list(groups.values())


def crop_groups(feats: list[Tensor], groups: list) -> list[list[Tensor]]:
    """Crop the ROIs of every group (as :func:`group_rois` plans them) at every level.

    Returns, per group, per level a [n, C_l, gh_l, gw_l] tensor, ROIs in the group's ``members`` order.
    ``feats[l]`` is the level-l map of the batch [B, C_l, H/2^l, W/2^l].

    All ROIs of one image at one level are sampled by a single grid_sample call over their points laid
    end to end (a [1, P, 1, 2] grid): the values are those of one call per ROI (grid sampling is per
    point), but the backward pass allocates and zero-fills the full-size input gradient once per (image,
    level) instead of once per (group, image, level), which dominated the training step's time.
    """
    # (level, image) -> [(group, position in group, LevelBox)], group-major so each group is one slice
    points: dict[tuple[int, int], list] = {}
    for g, (levels_per_roi, members) in enumerate(groups):
        for k, ((b, _), levels) in enumerate(zip(members, levels_per_roi)):
            for lvl, lv in enumerate(levels):
                points.setdefault((lvl, b), []).append((g, k, lv))
    pieces: dict[tuple[int, int], list] = {}  # (group, level) -> [(positions, [n, C, gh, gw])]
    for (lvl, b), items in sorted(points.items()):
        feat = feats[lvl][b:b + 1]
        _, c, height, width = feat.shape
        grids, counts, runs = [], [], []  # runs: one per group present: (g, positions, gh, gw)
        for g, k, lv in items:
            gx = np.asarray(lv.xs(), np.float64) / max(width - 1, 1) * 2 - 1
            gy = np.asarray(lv.ys(), np.float64) / max(height - 1, 1) * 2 - 1
            grid = np.empty((lv.gh, lv.gw, 2), np.float64)
            grid[..., 0] = gx[None, :]
            grid[..., 1] = gy[:, None]
            grids.append(grid.reshape(-1, 2))
            if runs and runs[-1][0] == g:
                runs[-1][1].append(k)
                counts[-1] += lv.gh * lv.gw
            else:
                runs.append((g, [k], lv.gh, lv.gw))
                counts.append(lv.gh * lv.gw)
        dtype = sampling_dtype(feat)
        grid = torch.as_tensor(np.concatenate(grids)[None, :, None, :], dtype=dtype, device=feat.device)
        sampled = F.grid_sample(feat.to(dtype), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)[0, :, :, 0]
        for (g, positions, gh, gw), part in zip(runs, torch.split(sampled, counts, dim=1)):
            crops = part.reshape(c, len(positions), gh, gw).permute(1, 0, 2, 3)
            pieces.setdefault((g, lvl), []).append((positions, crops))
    out = []
    for g, (levels_per_roi, _) in enumerate(groups):
        per_level = []
        for lvl in range(len(levels_per_roi[0])):
            parts = pieces[(g, lvl)]
            order = [k for positions, _ in parts for k in positions]
            crops = torch.cat([t for _, t in parts], 0) if len(parts) > 1 else parts[0][1]
            if order != list(range(len(order))):
                inv = torch.empty(len(order), dtype=torch.long)
                inv[torch.as_tensor(order)] = torch.arange(len(order))
                crops = crops[inv.to(crops.device)]
            per_level.append(crops)
        out.append(per_level)
    return out


def crop_group(feats: list[Tensor], levels_per_roi: list[list[LevelBox]],
               members: list[tuple[int, int]]) -> list[Tensor]:
    """Crop one group's ROIs at every level (see :func:`crop_groups`): per level [n, C_l, gh_l, gw_l]."""
    return crop_groups(feats, [(levels_per_roi, members)])[0]
