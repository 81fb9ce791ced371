"""Keypoint Graph (Yi et al., MICCAI 2019): targets and box decoding, in numpy (no torch).

Conventions. Keypoint types, in channel order: 0 = top-left, 1 = top-right, 2 = bottom-left,
3 = bottom-right corner, 4 = centre of the box. Coordinates are (x, y) in the pixel grid of one scale
(pixel centres at integers; scale ``s`` pixel ``j`` sits at input pixel ``j * s``). A box is
``(x1, y1, x2, y2)``: the first and last row/column of the object (inclusive extents), as the authors'
code takes them from the mask.

* **Targets** (:func:`scale_keypoints`, :func:`keypoint_targets`): at scale ``s`` an object's mask is
  subsampled (nearest, ``mask[::s, ::s]``) and gets the five keypoints of its box only when the box is
  more than ``min_extent`` (11) px high and wide there. Each keypoint type has a disc map (pixels within
  ``radius`` of a keypoint of that type, each pixel owned by the nearest such keypoint, the first object
  on ties); the short-range offset (2 channels per type) of a disc pixel points to its keypoint; the
  mid-range offset of directed edge (a, b) (2 channels per edge, :data:`DIR_EDGES`) at a pixel of a's
  disc points to the same object's keypoint b.
* **Decoding** (:func:`decode_scale`): Hough voting of every pixel's keypoint probability at pixel +
  short offset (bilinear split over the 4 neighbours), divided by pi R^2, smoothed with a Gaussian
  (sigma 2); peaks = 4-neighbourhood local maxima above 0.004; star grouping (:func:`group_keypoints`);
  groups with >= 3 keypoints or two diagonal corners make boxes (:func:`group_box`); score = mean
  keypoint confidence. :func:`nms` merges the four scales.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

N_KPS = 5
TL, TR, BL, BR, CC = range(N_KPS)
#: the complete graph on the five keypoints (the authors' edge order)
EDGES = ((0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))
#: both directions: mid-range channel pair k is edge DIR_EDGES[k] (from, to)
DIR_EDGES = EDGES + tuple((b, a) for a, b in EDGES)
DIR_INDEX = {e: k for k, e in enumerate(DIR_EDGES)}
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


# ---------------------------------------------------------------------------------------------------
# boxes


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) inclusive extents of a non-empty bool mask, else None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def label_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids (increasing) and their inclusive boxes [n, 4] of a label map (0 = background)."""
    objs = ndi.find_objects(np.asarray(labels, np.int64))
    ids, boxes = [], []
    for k, sl in enumerate(objs):
        if sl is None:
            continue
        ids.append(k + 1)
        boxes.append((sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1))
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def box_keypoints(box) -> np.ndarray:
    """[5, 2] (x, y) keypoints of an (x1, y1, x2, y2) box: tl, tr, bl, br, centre."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2], [(x1 + x2) / 2, (y1 + y2) / 2]], np.float64)


def code_box_iou(a, b) -> float:
    """The authors' box Jaccard (areas (x2-x1)*(y2-y1), no +1; 0 when the union is <= 2)."""
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    inter = max(min(ax2, bx2) - max(ax1, bx1), 0.0) * max(min(ay2, by2) - max(ay1, by1), 0.0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return 0.0 if union <= 2 else float(inter / union)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy box NMS (the authors' convention: areas without +1; a box is suppressed when its IoU with a
    kept one is > ``iou_threshold``). Returns kept indices in descending score; ties keep input order."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[rest], x2[i]) - np.maximum(x1[rest], x1[i]))
        h = np.maximum(0.0, np.minimum(y2[rest], y2[i]) - np.maximum(y1[rest], y1[i]))
        inter = w * h
        union = area[rest] - inter + area[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


# ---------------------------------------------------------------------------------------------------
# targets


def scale_keypoints(labels: np.ndarray, scale: int, min_extent: int = 11) -> np.ndarray:
    """Keypoints [n, 5, 2] of the objects of a label map that qualify at ``scale`` (mask subsampled
    ``[::scale, ::scale]``, box more than ``min_extent`` px high and wide there), in that scale's grid."""
    small = np.asarray(labels)[::scale, ::scale]
    _, boxes = label_boxes(small)
    keep = [(b[2] - b[0]) > min_extent and (b[3] - b[1]) > min_extent for b in boxes]
    kps = [box_keypoints(b) for b, k in zip(boxes, keep) if k]
    return np.asarray(kps, np.float64).reshape(-1, N_KPS, 2)


def keypoint_targets(kps: np.ndarray, height: int, width: int, radius: float = 5.0):
    """Disc maps [5, h, w] (float32 0/1), short offsets [10, h, w] and mid offsets [40, h, w] (float32)."""
    kps = np.asarray(kps, np.float64).reshape(-1, N_KPS, 2)
    owner = np.full((N_KPS, height, width), -1, np.int64)
    best = np.full((N_KPS, height, width), np.inf)
    r = float(radius)
    for j, pts in enumerate(kps):
        for t, (x, y) in enumerate(pts):
            x0, x1 = max(math.floor(x - r), 0), min(math.ceil(x + r), width - 1)
            y0, y1 = max(math.floor(y - r), 0), min(math.ceil(y + r), height - 1)
            if x1 < x0 or y1 < y0:
                continue
            yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
            d = np.hypot(xx - x, yy - y)
            cur = best[t, y0:y1 + 1, x0:x1 + 1]
            upd = (d <= r) & (d < cur)
            cur[upd] = d[upd]
            owner[t, y0:y1 + 1, x0:x1 + 1][upd] = j
    heat = (owner >= 0).astype(np.float32)
    short = np.zeros((2 * N_KPS, height, width), np.float32)
    mid = np.zeros((2 * len(DIR_EDGES), height, width), np.float32)
    for t in range(N_KPS):
        ys, xs = np.nonzero(owner[t] >= 0)
        j = owner[t, ys, xs]
        short[2 * t, ys, xs] = kps[j, t, 0] - xs
        short[2 * t + 1, ys, xs] = kps[j, t, 1] - ys
        for k, (a, b) in enumerate(DIR_EDGES):
            if a != t:
                continue
            mid[2 * k, ys, xs] = kps[j, b, 0] - xs
            mid[2 * k + 1, ys, xs] = kps[j, b, 1] - ys
    return heat, short, mid


# ---------------------------------------------------------------------------------------------------
# decoding


def vote_maps(kp: np.ndarray, short: np.ndarray, radius: float = 5.0) -> np.ndarray:
    """Hough votes [5, h, w]: each pixel adds its keypoint probability at pixel + short offset, split
    bilinearly over the four neighbouring pixels (votes outside the map are lost); divided by pi R^2."""
    n, h, w = kp.shape
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w), np.float64)
    for t in range(n):
        vx = xs + short[2 * t].astype(np.float64)
        vy = ys + short[2 * t + 1].astype(np.float64)
        p = kp[t].astype(np.float64)
        fx, fy = np.floor(vx), np.floor(vy)
        dx, dy = vx - fx, vy - fy
        fx, fy = fx.astype(np.int64), fy.astype(np.int64)
        acc = np.zeros(h * w, np.float64)
        for ox, oy, wt in ((0, 0, (1 - dx) * (1 - dy)), (1, 0, dx * (1 - dy)), (0, 1, (1 - dx) * dy), (1, 1, dx * dy)):
            cx, cy = fx + ox, fy + oy
            ok = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h) & np.isfinite(wt)
            acc += np.bincount((cy[ok] * w + cx[ok]), weights=(p * wt)[ok], minlength=h * w)
        out[t] = acc.reshape(h, w)
    return out / (math.pi * radius ** 2)


def smooth_votes(votes: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return np.stack([ndi.gaussian_filter(v, sigma) for v in votes]) if sigma > 0 else votes


def find_peaks(heat: np.ndarray, threshold: float = 0.004) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4-neighbourhood local maxima above ``threshold`` of each map [5, h, w]: (type, x, y, conf) arrays,
    in (type, row-major) order."""
    types, xs, ys, confs = [], [], [], []
    for t, m in enumerate(heat):
        peak = (ndi.maximum_filter(m, footprint=CROSS) == m) & (m > threshold)
        y, x = np.nonzero(peak)
        types.append(np.full(x.size, t, np.int64))
        xs.append(x)
        ys.append(y)
        confs.append(m[y, x])
    return np.concatenate(types), np.concatenate(xs), np.concatenate(ys), np.concatenate(confs)


def _disc(radius: float) -> tuple[np.ndarray, np.ndarray]:
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = xx ** 2 + yy ** 2 <= radius ** 2
    return yy[inside], xx[inside]


def group_keypoints(types, xs, ys, confs, mid: np.ndarray, match_radius: float = 6.0,
                    seed_exclusion: float = 10.0) -> list[np.ndarray]:
    """Star grouping. Keypoints are taken as seeds in descending confidence (ties: input order); a seed is
    consumed, and discarded when it lies within ``seed_exclusion`` px of an existing group's keypoint of
    its type. Otherwise each other type b is looked up at seed + the seed's mid-range offset (seed -> b)
    and the nearest unused keypoint of type b within ``match_radius`` px joins (and is consumed).

    Returns groups as [5, 4] arrays (x, y, conf, present)."""
    types, xs, ys = (np.asarray(a, np.int64) for a in (types, xs, ys))
    confs = np.asarray(confs, np.float64)
    order = np.argsort(-confs, kind="stable")
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    _, h, w = mid.shape
    per_type = []
    for b in range(N_KPS):
        idx = np.flatnonzero(types == b)
        tree = cKDTree(np.stack([xs[idx], ys[idx]], 1).astype(np.float64)) if idx.size else None
        per_type.append((idx, tree))
    used = np.zeros(types.size, bool)
    blocked = np.zeros((N_KPS, h, w), bool)
    dy, dx = _disc(seed_exclusion)
    groups = []
    for k in order:
        if used[k]:
            continue
        used[k] = True
        t, x, y = int(types[k]), int(xs[k]), int(ys[k])
        if blocked[t, y, x]:
            continue
        g = np.zeros((N_KPS, 4), np.float64)
        g[t] = (x, y, confs[k], 1.0)
        for b in range(N_KPS):
            if b == t:
                continue
            idx, tree = per_type[b]
            if tree is None:
                continue
            e = DIR_INDEX[(t, b)]
            px, py = x + float(mid[2 * e, y, x]), y + float(mid[2 * e + 1, y, x])
            if not (math.isfinite(px) and math.isfinite(py)):
                continue
            cand = idx[np.asarray(tree.query_ball_point((px, py), match_radius), np.int64)]
            cand = cand[~used[cand]]
            if cand.size == 0:
                continue
            dist = np.hypot(xs[cand] - px, ys[cand] - py)
            m = cand[np.lexsort((rank[cand], dist))[0]]
            used[m] = True
            g[b] = (xs[m], ys[m], confs[m], 1.0)
        for b in range(N_KPS):
            if g[b, 3]:
                yy, xx = int(g[b, 1]) + dy, int(g[b, 0]) + dx
                ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                blocked[b, yy[ok], xx[ok]] = True
        groups.append(g)
    return groups


def keep_group(g: np.ndarray) -> bool:
    """>= 3 keypoints, or two diagonal corners."""
    p = g[:, 3] > 0
    return bool(p.sum() >= 3 or (p[TL] and p[BR]) or (p[TR] and p[BL]))


def group_box(g: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The box rules of the authors' code from a group [5, 4] (x, y, conf, present):

    * 3 or 4 corners: top = min y of the present top corners, bottom = max y of the present bottom
      corners, left = min x of the present left corners, right = max x of the present right corners;
    * two diagonal corners: the box they span;
    * two adjacent corners + the centre: the box mirrored through the centre;

    score = mean confidence of the present keypoints. None when no rule applies."""
    p = g[:, 3] > 0
    x, y = g[:, 0], g[:, 1]
    n_corners = int(p[:4].sum())
    box = None
    if n_corners >= 3:
        top = [c for c in (TL, TR) if p[c]]
        bottom = [c for c in (BL, BR) if p[c]]
        left = [c for c in (TL, BL) if p[c]]
        right = [c for c in (TR, BR) if p[c]]
        box = (min(x[left]), min(y[top]), max(x[right]), max(y[bottom]))
    elif n_corners == 2:
        if p[TL] and p[BR]:
            box = (x[TL], y[TL], x[BR], y[BR])
        elif p[TR] and p[BL]:
            box = (x[BL], y[TR], x[TR], y[BL])
        elif p[CC]:
            if p[TL] and p[TR]:
                y1 = min(y[TL], y[TR])
                box = (x[TL], y1, x[TR], y1 + 2 * (y[CC] - y1))
            elif p[TL] and p[BL]:
                x1 = min(x[TL], x[BL])
                box = (x1, y[TL], x1 + 2 * (x[CC] - x1), y[BL])
            elif p[TR] and p[BR]:
                x2 = max(x[TR], x[BR])
                box = (x2 - 2 * (x2 - x[CC]), y[TR], x2, y[BR])
            elif p[BL] and p[BR]:
                y2 = max(y[BL], y[BR])
                box = (x[BL], y2 - 2 * (y2 - y[CC]), x[BR], y2)
    if box is None:
        return None
    return np.asarray(box, np.float64), float(g[p, 2].mean())


def decode_scale(kp: np.ndarray, short: np.ndarray, mid: np.ndarray, radius: float = 5.0, sigma: float = 2.0,
                 peak_threshold: float = 0.004, match_radius: float | None = None,
                 seed_exclusion: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [n, 4] (x1, y1, x2, y2, in this scale's grid) and scores [n] from one scale's maps:
    ``kp`` [5, h, w] probabilities, ``short`` [10, h, w], ``mid`` [40, h, w]."""
    heat = smooth_votes(vote_maps(kp, short, radius), sigma)
    types, xs, ys, confs = find_peaks(heat, peak_threshold)
    groups = group_keypoints(types, xs, ys, confs, mid, radius + 1 if match_radius is None else match_radius,
                             seed_exclusion)
    boxes, scores = [], []
    for g in groups:
        if not keep_group(g):
            continue
        res = group_box(g)
        if res is not None:
            boxes.append(res[0])
            scores.append(res[1])
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64)


def crop_bounds(box, level: int, height: int, width: int, inclusive: bool = False) -> tuple[int, int, int, int] | None:
    """Integer crop [y1:y2, x1:x2] of an input-pixel box at feature level ``level`` (map of ``height`` x
    ``width`` = input / 2^level): the authors' rounding (numpy round-half-even of box / 2^level), clipped
    to the map, end-exclusive at the box's last row/column (``inclusive`` adds that row/column). None
    when the crop is under 2 px high or wide (the level and all coarser ones are skipped)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if inclusive:
        x2, y2 = x2 + 1, y2 + 1
    s = float(2 ** level)
    cy1, cx1 = max(0, int(np.round(y1 / s))), max(0, int(np.round(x1 / s)))
    lim_h, lim_w = (height, width) if inclusive else (height - 1, width - 1)
    cy2, cx2 = min(int(np.round(y2 / s)), lim_h), min(int(np.round(x2 / s)), lim_w)
    if cy2 < cy1 or cx2 < cx1 or cy2 - cy1 < 2 or cx2 - cx1 < 2:
        return None
    return cy1, cy2, cx1, cx2


__all__ = ["EDGES", "DIR_EDGES", "DIR_INDEX", "N_KPS", "mask_box", "label_boxes", "box_keypoints", "code_box_iou",
           "nms", "scale_keypoints", "keypoint_targets", "vote_maps", "smooth_votes", "find_peaks",
           "group_keypoints", "keep_group", "group_box", "decode_scale", "crop_bounds"]
