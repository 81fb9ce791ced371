"""Embedded synthetic datasets: small stand-ins for the paper's three real sets.

Three generators, each deterministic given its ``numpy.random.Generator``, each mimicking the
difficulty of one real data set:

``nuclei`` (like DSB2018)
    Round and elliptic nuclei of varied size and brightness, many touching or in clumps, on a dark
    (fluorescence) or light (H&E-like / brightfield stain) background, with mild blur and noise.
    **Images are always HxWx3 uint8**: a fluorescence image is gray replicated into three channels,
    exactly as DSB2018 stores its fluorescence PNGs, so one data set never mixes channel counts.
``plant`` (like CVPPP Arabidopsis rosettes)
    A rosette of 5-20 elongated leaves (obovate blades on thin petioles) arranged by the golden angle
    around a common centre, drawn oldest first so that younger leaves occlude older ones; green
    leaves with midribs, lateral veins and shadows on a brown textured soil. HxWx3 uint8.
``neural`` (like the paper's rat CNS stem-cell phase-contrast images)
    Low-contrast cells (soma blobs) with long, thin (1-2 px) curved and branching neurites, a
    phase-contrast halo (bright ring around a dark cell or the reverse), uneven illumination and
    noise. HxW uint8 (gray).

Every label map is int32 HxW (values fit uint16): 0 = background, instances 1..n consecutive, each
instance one 4-connected component of at least 9 pixels spanning at least 3x3. An object split by
an occluding one keeps its largest piece; the other pieces go to the neighbour that covers them
(plant) or to the background (the image is rendered from the final label map, so image and labels
always agree). Objects hidden or cut down below the minimum size are dropped and the rest renumbered.

Counts are drawn uniformly in [min_count, max_count]; min_count is a target that crowded settings
(large objects in a small image) may miss after hidden and clipped objects are dropped.

The public entry points are :data:`GENERATORS`, :func:`generate` and :func:`generator_params`;
:data:`PARAM_HELP` documents every tunable parameter.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
from scipy import ndimage as ndi
from skimage import draw
from skimage.color import hsv2rgb
from skimage.segmentation import find_boundaries, relabel_sequential

from objguided.errors import ConfigError

__all__ = ["GENERATORS", "PARAM_HELP", "generate", "generator_params", "rng_for"]

MIN_AREA = 9  # pixels; also every instance must span at least MIN_SIDE x MIN_SIDE
MIN_SIDE = 3
_REF_AREA = 128 * 128  # counts marked "auto" scale with image area relative to this


# --------------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    default: Any
    help: str
    type: type = float
    lo: float | None = None
    hi: float | None = None
    allow_none: bool = False


_PARAMS: dict[str, dict[str, _Param]] = {
    "nuclei": {
        "min_count": _Param(5, "fewest nuclei per image", int, 1, 1000),
        "max_count": _Param(None, "most nuclei per image; None = 40 per 128x128 of image area, "
                                  "clipped to [min_count, 150]", int, 1, 5000, allow_none=True),
        "min_radius": _Param(3.0, "smallest mean nucleus radius of an image, px", float, 1.5, 200),
        "max_radius": _Param(11.0, "largest mean nucleus radius of an image, px (each image draws "
                                   "one mean radius, log-uniformly, and its nuclei vary about it)",
                             float, 1.5, 200),
        "max_aspect": _Param(1.8, "largest ratio of long to short axis", float, 1.0, 5.0),
        "clump_fraction": _Param(0.45, "fraction of nuclei placed touching an earlier one (clumps)",
                                 float, 0.0, 1.0),
        "max_coverage": _Param(0.40, "cap on the fraction of the image covered by nuclei",
                               float, 0.05, 0.9),
        "p_stained": _Param(0.3, "probability that an image is stain-like (dark nuclei on a light "
                                 "background) rather than fluorescence-like", float, 0.0, 1.0),
        "blur": _Param(0.8, "typical Gaussian blur sigma, px (each image draws 0.6x-1.4x)",
                       float, 0.0, 10.0),
        "noise": _Param(0.03, "typical Gaussian noise sigma, as a fraction of the 0-255 range",
                        float, 0.0, 1.0),
    },
    "plant": {
        "min_count": _Param(5, "fewest leaves per rosette", int, 1, 200),
        "max_count": _Param(20, "most leaves per rosette", int, 1, 200),
        "min_rosette": _Param(0.30, "smallest rosette radius, as a fraction of the image's shorter "
                                    "side", float, 0.05, 0.5),
        "max_rosette": _Param(0.44, "largest rosette radius, as a fraction of the shorter side",
                              float, 0.05, 0.5),
        "leaf_width": _Param(0.65, "typical blade width / blade length", float, 0.1, 1.5),
        "petiole_fraction": _Param(0.35, "typical share of a mature leaf's length that is petiole "
                                         "(stalk)", float, 0.0, 0.8),
        "blur": _Param(0.6, "Gaussian blur sigma, px", float, 0.0, 10.0),
        "noise": _Param(0.02, "Gaussian noise sigma, as a fraction of the 0-255 range",
                        float, 0.0, 1.0),
    },
    "neural": {
        "min_count": _Param(3, "fewest cells per image", int, 1, 1000),
        "max_count": _Param(None, "most cells per image; None = 6 per 128x128 of image area, "
                                  "clipped to [min_count, 30]", int, 1, 5000, allow_none=True),
        "min_radius": _Param(4.0, "smallest soma radius, px", float, 1.5, 200),
        "max_radius": _Param(8.5, "largest soma radius, px", float, 1.5, 200),
        "max_neurites": _Param(4, "most primary neurites per cell (each cell draws 0..max, "
                                  "at least one cell per image has one)", int, 0, 20),
        "neurite_length": _Param(8.0, "typical neurite length, in soma radii", float, 0.0, 100.0),
        "p_branch": _Param(0.35, "probability that a neurite carries a side branch",
                           float, 0.0, 1.0),
        "contrast": _Param(0.12, "cell contrast relative to the background level (low by design)",
                           float, 0.0, 2.0),
        "halo": _Param(1.2, "strength of the phase-contrast halo relative to the background",
                       float, 0.0, 2.0),
        "illumination": _Param(0.2, "amplitude of the smooth uneven illumination (fraction)",
                               float, 0.0, 0.9),
        "noise": _Param(0.035, "Gaussian noise sigma, as a fraction of the background level",
                        float, 0.0, 1.0),
    },
}

#: ``PARAM_HELP[kind][name]``: one line on what each tunable parameter does.
PARAM_HELP: dict[str, dict[str, str]] = {k: {n: p.help for n, p in ps.items()} for k, ps in _PARAMS.items()}


def _known_kinds() -> str:
    return ", ".join(sorted(_PARAMS))


def generator_params(kind: str) -> dict[str, Any]:
    """The tunable parameters of ``kind`` and their defaults (see :data:`PARAM_HELP` for each).

    >>> sorted(generator_params("plant"))[:3]
    ['blur', 'leaf_width', 'max_count']
    """
    if kind not in _PARAMS:
        raise ConfigError(f"unknown synthetic kind '{kind}'; known kinds: {_known_kinds()}")
    return {name: p.default for name, p in _PARAMS[kind].items()}


def _resolve(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` against ``kind``'s table and fill in the defaults."""
    if kind not in _PARAMS:
        raise ConfigError(f"unknown synthetic kind '{kind}'; known kinds: {_known_kinds()}")
    table = _PARAMS[kind]
    out: dict[str, Any] = {}
    for key in params:
        if key not in table:
            raise ConfigError(f"unknown parameter '{key}' for synthetic kind '{kind}'; "
                              f"known: {', '.join(sorted(table))}")
    for name, spec in table.items():
        value = params.get(name, spec.default)
        if value is None:
            if not spec.allow_none:
                raise ConfigError(f"synthetic '{kind}': parameter '{name}' must not be None")
            out[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"synthetic '{kind}': parameter '{name}' must be a number, "
                              f"got {value!r}")
        if spec.type is int:
            if float(value) != int(value):
                raise ConfigError(f"synthetic '{kind}': parameter '{name}' must be a whole number, "
                                  f"got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"synthetic '{kind}': parameter '{name}' must be finite")
        if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
            raise ConfigError(f"synthetic '{kind}': parameter '{name}' = {value} is out of range "
                              f"[{spec.lo}, {spec.hi}]")
        out[name] = value
    for lo_name, hi_name in (("min_count", "max_count"), ("min_radius", "max_radius"),
                             ("min_rosette", "max_rosette")):
        if lo_name in out and out[lo_name] is not None and out.get(hi_name) is not None:
            if out[lo_name] > out[hi_name]:
                raise ConfigError(f"synthetic '{kind}': {lo_name} = {out[lo_name]} exceeds "
                                  f"{hi_name} = {out[hi_name]}")
    return out


def _auto_max(p: dict[str, Any], size: tuple[int, int], per_ref: float, cap: int) -> int:
    if p["max_count"] is not None:
        return p["max_count"]
    auto = int(round(per_ref * size[0] * size[1] / _REF_AREA))
    return int(min(max(auto, p["min_count"]), max(cap, p["min_count"])))


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)  # type: ignore[union-attr]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"image_size must be an int or (height, width), got {size!r}") from exc
    if h < 32 or w < 32 or h > 8192 or w > 8192:
        raise ConfigError(f"image_size {h}x{w} is out of range; each side must be 32..8192 px")
    return h, w


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise (a cheap texture / illumination field)."""
    if sigma > 4:  # filter a coarser grid and zoom up: same look, far cheaper for large sigma
        f = int(sigma // 2)
        small = (shape[0] // f + 2, shape[1] // f + 2)
        n = ndi.gaussian_filter(rng.standard_normal(small), sigma / f, mode="wrap")
        n = ndi.zoom(n, f, order=1)[: shape[0], : shape[1]]
    else:
        n = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    n -= n.mean()
    return n / (n.std() + 1e-12)


def _blob_polygon(cy: float, cx: float, a: float, b: float, angle: float,
                  harmonics: np.ndarray, phases: np.ndarray, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Contour of an ellipse (semi-axes a, b, rotated by angle) with a smooth radial wobble."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    k = np.arange(2, 2 + len(harmonics))[:, None]
    wobble = 1 + (harmonics[:, None] * np.cos(k * t + phases[:, None])).sum(0)
    return _axes_to_image(cy, cx, a * np.cos(t) * wobble, b * np.sin(t) * wobble, angle)


def _random_blob(rng: np.random.Generator, cy: float, cx: float, r: float, max_aspect: float, wobble: float,
                 shape: tuple[int, int], n: int = 48) -> tuple[np.ndarray, np.ndarray, float, float, float]:
    """A wobbly ellipse of mean radius ``r`` (random aspect ratio up to ``max_aspect``, orientation and
    radial harmonics up to ``wobble``) rasterised in ``shape``: (rows, cols, semi-axes a and b, angle)."""
    aspect = rng.uniform(1.0, max_aspect) ** 0.5
    a, b = r * aspect, r / aspect
    angle = rng.uniform(0, np.pi)
    pr, pc = _blob_polygon(cy, cx, a, b, angle, rng.uniform(0, wobble, 3), rng.uniform(0, 2 * np.pi, 3), n)
    rr, cc = draw.polygon(pr, pc, shape=shape)
    return rr, cc, a, b, angle


def _axes_to_image(cy: float, cx: float, u, v, angle: float):
    """Image (row, col) of the points ``u`` along and ``v`` across an axis at ``angle`` through (cy, cx)."""
    ca, sa = math.cos(angle), math.sin(angle)
    return cy + u * sa + v * ca, cx + u * ca - v * sa


def _along_across(dy, dx, angle: float):
    """The inverse of :func:`_axes_to_image`: offsets (dy, dx) from the axis' origin -> (u along, v across)."""
    ca, sa = math.cos(angle), math.sin(angle)
    return dx * ca + dy * sa, -dx * sa + dy * ca


def _clean_labels(labels: np.ndarray, to_neighbour: bool) -> tuple[np.ndarray, np.ndarray]:
    """Keep each instance's largest 4-connected piece, drop those under the minimum size, renumber.

    Removed pixels go to the neighbouring instance that borders them most (``to_neighbour``) or to
    the background. Returns the new label map (int32, ids 1..n in the old ids' order) and
    ``kept``: ``kept[k - 1]`` is the old id of new id ``k``.
    """
    labels = labels.astype(np.int32, copy=True)
    four = ndi.generate_binary_structure(2, 1)
    for _ in range(3):  # reassigning pieces can, rarely, make a neighbour too small in turn
        changed = False
        slices = ndi.find_objects(labels)
        for idx, sl in enumerate(slices):
            if sl is None:
                continue
            lab = idx + 1
            region = labels[sl] == lab
            comp, ncomp = ndi.label(region, four)
            if ncomp > 1:
                sizes = np.bincount(comp.ravel())
                sizes[0] = 0
                keep = comp == int(sizes.argmax())
            else:
                keep = region
            h_ext = np.any(keep, 1).sum()
            w_ext = np.any(keep, 0).sum()
            if keep.sum() < MIN_AREA or h_ext < MIN_SIDE or w_ext < MIN_SIDE:
                keep = np.zeros_like(region)
            drop = region & ~keep
            if not drop.any():
                continue
            changed = True
            if not to_neighbour:
                labels[sl][drop] = 0
                continue
            # pad the window by one pixel so pieces on the window's edge see their neighbours
            r0, r1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, labels.shape[0])
            c0, c1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, labels.shape[1])
            win = labels[r0:r1, c0:c1]
            dmask = np.zeros(win.shape, bool)
            dmask[sl[0].start - r0: sl[0].stop - r0, sl[1].start - c0: sl[1].stop - c0] = drop
            pieces, npieces = ndi.label(dmask, four)
            for q in range(1, npieces + 1):
                piece = pieces == q
                ring = ndi.binary_dilation(piece, four) & ~piece
                nb = win[ring]
                nb = nb[(nb != lab) & (nb != 0)]
                win[piece] = int(np.bincount(nb).argmax()) if nb.size else 0
        if not changed:
            break
    new, _, _ = relabel_sequential(labels)  # keeps the old ids' order
    old_ids = np.unique(labels)
    return new.astype(np.int32), old_ids[old_ids != 0]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Intensities in [0, 1] (values outside are clipped) -> uint8, rounded."""
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def _four_connect(rr: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert a corner pixel at every diagonal step of an ordered 8-connected pixel path."""
    if len(rr) < 2:
        return rr, cc
    diag = (rr[1:] != rr[:-1]) & (cc[1:] != cc[:-1])
    out_r = np.empty(len(rr) + diag.sum(), rr.dtype)
    out_c = np.empty_like(out_r)
    pos = np.arange(len(rr)) + np.concatenate([[0], np.cumsum(diag)])
    out_r[pos], out_c[pos] = rr, cc
    ins = pos[:-1][diag] + 1
    out_r[ins], out_c[ins] = rr[:-1][diag], cc[1:][diag]
    return out_r, out_c


# --------------------------------------------------------------------------------------------------
# nuclei (DSB2018-like)
# --------------------------------------------------------------------------------------------------


def nuclei(rng: np.random.Generator, size: tuple[int, int], **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """DSB2018-like nuclei: returns (HxWx3 uint8 image, HxW int32 labels)."""
    p = _resolve("nuclei", params)
    H, W = size = _size(size)
    n_hi = _auto_max(p, size, 40, 150)
    r_mean = math.exp(rng.uniform(math.log(p["min_radius"]), math.log(p["max_radius"])))
    cap = int(p["max_coverage"] * H * W / (math.pi * r_mean**2 * 1.15))
    n_target = int(rng.integers(p["min_count"], n_hi + 1))
    n_target = max(min(n_target, cap), p["min_count"])
    centres = _place_nuclei(rng, p, size, n_target, r_mean)
    labels, _ = _clean_labels(_draw_nuclei(rng, p, size, centres), to_neighbour=False)
    return _render_nuclei(rng, p, labels), labels


def _place_nuclei(rng: np.random.Generator, p: dict[str, Any], size: tuple[int, int], n_target: int,
                  r_mean: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres and radii (cy, cx, rad) of up to ``n_target`` nuclei; clumped ones touch an earlier nucleus."""
    H, W = size
    cy, cx, rad = np.empty(n_target), np.empty(n_target), np.empty(n_target)
    placed = 0
    tries = 0
    while placed < n_target and tries < 60 * n_target:
        tries += 1
        r = float(np.clip(r_mean * rng.lognormal(0, 0.22), p["min_radius"] * 0.8, p["max_radius"] * 1.2))
        if tries > 30 * n_target:  # crowded: fall back to small nuclei so min_count is still met
            r = max(p["min_radius"] * 0.8, 2.0)
        if placed and rng.random() < p["clump_fraction"]:
            j = int(rng.integers(placed))
            phi = rng.uniform(0, 2 * np.pi)
            d = (rad[j] + r) * rng.uniform(0.8, 1.0)
            y, x = cy[j] + d * math.sin(phi), cx[j] + d * math.cos(phi)
            min_sep = 0.72
        else:
            y, x = rng.uniform(0, H), rng.uniform(0, W)
            min_sep = 0.9
        if not (0 <= y < H and 0 <= x < W):
            continue
        if placed:
            dist = np.hypot(cy[:placed] - y, cx[:placed] - x)
            if np.any(dist < min_sep * (rad[:placed] + r)):
                continue
        cy[placed], cx[placed], rad[placed] = y, x, r
        placed += 1
    return cy[:placed], cx[:placed], rad[:placed]


def _draw_nuclei(rng: np.random.Generator, p: dict[str, Any], size: tuple[int, int],
                 centres: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The raw label map: a wobbly ellipse per nucleus; a pixel two nuclei claim goes to the one whose
    contour is further away (the smaller normalised elliptic radius: 0 at the centre, ~1 at the contour)."""
    labels = np.zeros(size, np.int32)
    best = np.full(size, np.inf)
    for i, (y, x, r) in enumerate(zip(*centres)):
        rr, cc, a, b, angle = _random_blob(rng, y, x, r, p["max_aspect"], 0.06, size)
        if rr.size == 0:
            continue
        u, v = _along_across(rr - y, cc - x, angle)
        dn = np.hypot(u / a, v / b)
        win = dn < best[rr, cc]
        best[rr[win], cc[win]] = dn[win]
        labels[rr[win], cc[win]] = i + 1
    return labels


def _render_nuclei(rng: np.random.Generator, p: dict[str, Any], labels: np.ndarray) -> np.ndarray:
    """The HxWx3 uint8 image of a final label map: fluorescence-like or, with ``p_stained``, stain-like."""
    H, W = labels.shape
    stained = rng.random() < p["p_stained"]
    fg = labels > 0
    interior = fg & ~find_boundaries(labels, mode="inner", connectivity=1)
    dist = ndi.distance_transform_edt(interior) if fg.any() else np.zeros((H, W))
    edge = np.clip(0.45 + 0.55 * dist / 2.5, 0, 1)  # soft rim and a dip where two nuclei touch
    level = np.concatenate([[0.0], rng.uniform(0.35, 1.0, int(labels.max()))])  # per-nucleus staining
    chrom = _smooth_noise(rng, (H, W), rng.uniform(0.8, 1.6))
    tex_amp = rng.uniform(0.08, 0.25)
    nuc = level[labels] * edge * (1 + tex_amp * chrom) * fg
    blur = p["blur"] * rng.uniform(0.6, 1.4)
    noise = p["noise"] * rng.uniform(0.5, 1.5)
    if stained:
        return _stained_nuclei(rng, nuc, fg, blur, noise)
    bg = rng.uniform(0.0, 0.08) + 0.02 * _smooth_noise(rng, (H, W), max(H, W) / 4)
    img = bg + rng.uniform(0.45, 0.95) * nuc
    if blur > 0:
        img = ndi.gaussian_filter(img, blur)
    img = img + noise * np.sqrt(np.clip(img, 0.01, None)) * rng.standard_normal((H, W)) * 2
    return np.repeat(_to_uint8(img)[..., None], 3, axis=2)  # gray in three channels, as DSB2018 stores it


def _stained_nuclei(rng: np.random.Generator, nuc: np.ndarray, fg: np.ndarray, blur: float,
                    noise: float) -> np.ndarray:
    """Beer-Lambert mix of hematoxylin (nuclei) and eosin (tissue), or plain brightfield: HxWx3 uint8."""
    H, W = nuc.shape
    if rng.random() < 0.7:
        h_vec, e_vec = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
    else:
        h_vec, e_vec = np.array([0.55, 0.60, 0.58]), np.array([0.20, 0.30, 0.60])
    tissue = np.clip(0.35 + 0.3 * _smooth_noise(rng, (H, W), rng.uniform(2, 6))
                     + 0.2 * _smooth_noise(rng, (H, W), max(H, W) / 6), 0, None)
    c_h = rng.uniform(0.8, 1.5) * nuc + 0.05
    c_e = rng.uniform(0.15, 0.5) * tissue * (1 - 0.6 * fg)
    if blur > 0:
        c_h, c_e = ndi.gaussian_filter(c_h, blur), ndi.gaussian_filter(c_e, blur)
    od = c_h[..., None] * h_vec + c_e[..., None] * e_vec
    rgb = np.exp(-od) * rng.uniform(0.85, 1.0)
    return _to_uint8(rgb + noise * 0.6 * rng.standard_normal((H, W, 3)))


# --------------------------------------------------------------------------------------------------
# plant (CVPPP-like rosettes)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Leaf:
    base_y: float  # petiole start (near the rosette centre)
    base_x: float
    angle: float  # direction from the centre, radians
    petiole: float  # petiole length, px
    blade: float  # blade length, px
    half_width: float  # blade half width, px
    age: float  # 1 = oldest, 0 = youngest
    hue: float
    sat: float
    val: float


def _plant_scene(rng: np.random.Generator, size: tuple[int, int], p: dict[str, Any]):
    """Lay out a rosette and rasterise it by occlusion.

    Returns (labels before cleaning, leaves, full masks' areas, centre, rosette radius); the label
    of leaf ``i`` (0 = oldest, drawn first) is ``i + 1``.
    """
    H, W = size
    cy = H / 2 + rng.uniform(-0.05, 0.05) * H
    cx = W / 2 + rng.uniform(-0.05, 0.05) * W
    R = rng.uniform(p["min_rosette"], p["max_rosette"]) * min(H, W)
    leaves = _rosette_leaves(rng, p, cy, cx, R)
    labels = np.zeros((H, W), np.int32)
    full_area = np.zeros(len(leaves) + 1, np.int64)
    for i, lf in enumerate(leaves):
        mask = _leaf_mask(rng, lf, max(1.0, 0.022 * R), size)
        full_area[i + 1] = mask.sum()
        labels[mask] = i + 1
    return labels, leaves, full_area, (cy, cx), R


def _rosette_leaves(rng: np.random.Generator, p: dict[str, Any], cy: float, cx: float, R: float) -> list[_Leaf]:
    """5-20 leaves around (cy, cx) by the golden angle, oldest (longest) first."""
    n = int(rng.integers(p["min_count"], p["max_count"] + 1))
    theta0 = rng.uniform(0, 2 * np.pi)
    golden = np.deg2rad(137.508)
    leaves: list[_Leaf] = []
    for i in range(n):
        age = 1.0 if n == 1 else (n - 1 - i) / (n - 1)
        total = R * (0.28 + 0.72 * age**0.8) * rng.uniform(0.88, 1.05)
        pet_frac = p["petiole_fraction"] * (0.45 + 0.55 * age) * rng.uniform(0.8, 1.2)
        pet_frac = float(np.clip(pet_frac, 0.0, 0.8))
        blade = total * (1 - pet_frac)
        half = 0.5 * blade * p["leaf_width"] * rng.uniform(0.8, 1.2)
        ang = theta0 + i * golden + rng.normal(0, np.deg2rad(8))
        off = rng.uniform(0, 0.04) * R
        oa = rng.uniform(0, 2 * np.pi)
        hue = rng.uniform(0.22, 0.30) - 0.03 * (1 - age)
        sat = rng.uniform(0.55, 0.8)
        val = rng.uniform(0.35, 0.55) + 0.12 * (1 - age)
        leaves.append(_Leaf(cy + off * math.sin(oa), cx + off * math.cos(oa), ang, total * pet_frac,
                            blade, half, age, hue, sat, val))
    return leaves


def _leaf_mask(rng: np.random.Generator, lf: _Leaf, pet_w: float, size: tuple[int, int]) -> np.ndarray:
    """One leaf's full mask: an obovate blade on a thin petiole ``pet_w`` px wide."""
    H, W = size
    t = np.linspace(0, 1, 40)
    # blade outline in leaf coordinates: u along the axis (0 = blade base), v across it
    prof = np.sin(np.pi * t**1.35) ** 0.7
    prof *= 1 + 0.03 * np.sin(t * rng.uniform(10, 30) + rng.uniform(0, 6))
    u = lf.petiole + np.concatenate([t, t[::-1]]) * lf.blade
    v = np.concatenate([prof, -prof[::-1]]) * lf.half_width
    v = np.maximum(np.abs(v), pet_w * 0.5 * (u < lf.petiole + 0.08 * lf.blade)) * np.sign(v + 1e-9)
    # the petiole: a thin quad from the base to the blade base, a bit wider at the blade
    w0, w1 = pet_w * 0.4, pet_w * 0.6
    pu = np.array([0.0, lf.petiole + 1, lf.petiole + 1, 0.0])
    pv = np.array([-w0, -w1, w1, w0])
    mask = np.zeros((H, W), bool)
    for uu, vv in ((u, v), (pu, pv)):
        rr, cc = draw.polygon(*_axes_to_image(lf.base_y, lf.base_x, uu, vv, lf.angle), shape=(H, W))
        mask[rr, cc] = True
    # thin stalks may rasterise with gaps: a line along the axis keeps the petiole whole
    ey, ex = _axes_to_image(lf.base_y, lf.base_x, lf.petiole + 2, 0.0, lf.angle)
    rr, cc = draw.line(int(round(lf.base_y)), int(round(lf.base_x)), int(round(ey)), int(round(ex)))
    rr, cc = _four_connect(rr, cc)
    ok = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
    mask[rr[ok], cc[ok]] = True
    return mask


def plant(rng: np.random.Generator, size: tuple[int, int], **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """CVPPP-like Arabidopsis rosette: returns (HxWx3 uint8 image, HxW int32 labels)."""
    p = _resolve("plant", params)
    size = _size(size)
    raw, leaves, _, _, R = _plant_scene(rng, size, p)
    labels, kept = _clean_labels(raw, to_neighbour=True)
    hue, sat, val = _soil(rng, size)
    _shade_leaves(rng, labels, [leaves[k - 1] for k in kept], kept, R, hue, sat, val)
    # leaf edges: a thin darker outline where leaves meet soil or each other
    edges = find_boundaries(labels, mode="inner", connectivity=1) & (labels > 0)
    val = val * (1 - 0.18 * edges)
    rgb = _hsv_to_rgb(np.clip(hue, 0, 1), np.clip(sat, 0, 1), np.clip(val, 0, 1))
    if p["blur"] > 0:
        rgb = ndi.gaussian_filter(rgb, (p["blur"], p["blur"], 0))
    return _to_uint8(rgb + p["noise"] * rng.standard_normal(rgb.shape)), labels


def _soil(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brown soil as (hue, saturation, value) maps, mottled at two scales, with light and dark grains."""
    soil_v = (0.30 + 0.06 * _smooth_noise(rng, size, max(size) / 10)
              + 0.05 * _smooth_noise(rng, size, 1.5) + 0.04 * _smooth_noise(rng, size, 0.7))
    grains = _smooth_noise(rng, size, 1.0)
    soil_v = soil_v + 0.12 * (grains > 2.2) - 0.10 * (grains < -2.2)
    soil_hue = rng.uniform(0.05, 0.09)
    soil_sat = rng.uniform(0.35, 0.55)
    return np.full(size, soil_hue), np.full(size, soil_sat) + 0.05 * _smooth_noise(rng, size, 4), soil_v


def _shade_leaves(rng: np.random.Generator, labels: np.ndarray, leaves: list[_Leaf], order: np.ndarray, R: float,
                  hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> None:
    """Paint leaf ``k`` (label k, drawn ``order[k - 1]``-th) into the HSV maps, in place: its green, midrib
    and lateral veins, a rounded look, a lighter petiole and the shadow of the leaves drawn after it."""
    fine = _smooth_noise(rng, labels.shape, 1.2)
    rank = np.concatenate([[0], order]).astype(np.int32)  # drawing order of each label
    for new_id, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        lf = leaves[new_id - 1]
        m = labels[sl] == new_id
        yy, xx = np.mgrid[sl[0], sl[1]]
        u, v = _along_across(yy - lf.base_y, xx - lf.base_x, lf.angle)
        u = u - lf.petiole  # 0 at the blade base
        tb = np.clip(u / max(lf.blade, 1), 0, 1)
        mid_w = 0.6 + 1.2 * (1 - tb) * lf.half_width / 12
        midrib = np.exp(-(v / mid_w) ** 2) * (u > 0)
        spacing = max(lf.blade / 6, 4)
        lateral = np.cos(2 * np.pi * (u - 0.8 * np.abs(v)) / spacing) ** 16 * (u > 0) * (np.abs(v) > 1)
        # rounded look: brighter along the leaf's own axis, darker towards its margin
        curv = 1 - 0.25 * np.clip(np.abs(v) / max(lf.half_width, 1), 0, 1) ** 2
        petiole = u < 0
        v_leaf = lf.val * curv * (1 + 0.05 * fine[sl]) + 0.10 * midrib + 0.04 * lateral
        v_leaf = np.where(petiole, lf.val * 1.1, v_leaf)
        h_leaf = np.where(petiole, lf.hue + 0.02, lf.hue - 0.01 * midrib)
        s_leaf = np.where(petiole, lf.sat * 0.8, lf.sat * (1 - 0.25 * midrib))
        above = (labels[sl] > 0) & (rank[labels[sl]] > rank[new_id])
        if above.any():
            shade = ndi.gaussian_filter(above.astype(float), max(1.0, R / 60))
            v_leaf = v_leaf * (1 - 0.45 * shade)
        val[sl][m], hue[sl][m], sat[sl][m] = v_leaf[m], h_leaf[m], s_leaf[m]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return hsv2rgb(np.stack([h % 1.0, s, v], axis=-1))


# --------------------------------------------------------------------------------------------------
# neural (phase-contrast neural stem cells)
# --------------------------------------------------------------------------------------------------


def _walk(rng: np.random.Generator, y: float, x: float, angle: float, length: float,
          wiggle: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random curve (unit steps, slowly drifting heading) as ordered 4-connected pixels."""
    steps = max(int(length), 2)
    turn = np.cumsum(rng.normal(0, wiggle, steps))
    turn = ndi.gaussian_filter1d(turn, 3) + rng.normal(0, wiggle * 2) * np.linspace(0, 1, steps)
    heading = angle + turn
    ys = y + np.concatenate([[0], np.cumsum(np.sin(heading))])
    xs = x + np.concatenate([[0], np.cumsum(np.cos(heading))])
    ry, rx = np.round(ys).astype(np.int64), np.round(xs).astype(np.int64)
    segs_r, segs_c = [], []
    for k in range(len(ry) - 1):
        rr, cc = draw.line(ry[k], rx[k], ry[k + 1], rx[k + 1])
        segs_r.append(rr[:-1])
        segs_c.append(cc[:-1])
    segs_r.append(ry[-1:])
    segs_c.append(rx[-1:])
    rr, cc = np.concatenate(segs_r), np.concatenate(segs_c)
    keep = np.ones(len(rr), bool)
    keep[1:] = (rr[1:] != rr[:-1]) | (cc[1:] != cc[:-1])
    return _four_connect(rr[keep], cc[keep])


def neural(rng: np.random.Generator, size: tuple[int, int], **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Phase-contrast neural stem cells: returns (HxW uint8 image, HxW int32 labels)."""
    p = _resolve("neural", params)
    size = _size(size)
    n_hi = _auto_max(p, size, 6, 30)
    n_target = int(rng.integers(p["min_count"], n_hi + 1))
    somata = _place_somata(rng, p, size, n_target)
    labels = _draw_somata(rng, somata, size)
    soma_mask = labels > 0
    thick = _grow_neurites(rng, p, labels, somata)
    labels, _ = _clean_labels(labels, to_neighbour=False)
    return _render_phase_contrast(rng, p, labels, soma_mask & (labels > 0), thick), labels


def _place_somata(rng: np.random.Generator, p: dict[str, Any], size: tuple[int, int],
                  n_target: int) -> list[tuple[float, float, float]]:
    """(y, x, radius) of up to ``n_target`` somata, apart from each other (a few touch)."""
    H, W = size
    somata: list[tuple[float, float, float]] = []
    tries = 0
    while len(somata) < n_target and tries < 80 * n_target:
        tries += 1
        r = rng.uniform(p["min_radius"], p["max_radius"])
        m = r + 2
        y, x = rng.uniform(m, H - m), rng.uniform(m, W - m)
        gap = 1.0 if rng.random() < 0.2 else rng.uniform(4, 12)
        if any(math.hypot(y - s[0], x - s[1]) < r + s[2] + gap for s in somata):
            continue
        somata.append((y, x, r))
    return somata


def _draw_somata(rng: np.random.Generator, somata: list[tuple[float, float, float]],
                 size: tuple[int, int]) -> np.ndarray:
    """The label map of the somata (wobbly ellipses); a pixel already taken stays with the earlier cell."""
    labels = np.zeros(size, np.int32)
    for i, (y, x, r) in enumerate(somata):
        rr, cc, _, _, _ = _random_blob(rng, y, x, r, 1.7, 0.08, size, n=32)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = i + 1
    return labels


def _grow_neurites(rng: np.random.Generator, p: dict[str, Any], labels: np.ndarray,
                   somata: list[tuple[float, float, float]]) -> np.ndarray:
    """Draw each cell's neurites into ``labels`` (in place): curves from the soma outwards, stopped one
    pixel short of any other cell. Returns the mask of their 2 px wide stretches (near the soma)."""
    H, W = labels.shape
    thick = np.zeros((H, W), bool)
    n_cells = len(somata)
    n_neur = rng.integers(0, p["max_neurites"] + 1, n_cells)
    if n_cells and p["max_neurites"] > 0 and n_neur.max() == 0:
        n_neur[int(rng.integers(n_cells))] = 1
    eight = np.ones((3, 3), bool)
    for i, (y, x, r) in enumerate(somata):
        lab = i + 1
        reach = int(r * (p["neurite_length"] * 2.2 + 2)) + 4
        rows = slice(max(int(y) - reach, 0), min(int(y) + reach + 1, H))
        cols = slice(max(int(x) - reach, 0), min(int(x) + reach + 1, W))
        win = labels[rows, cols]
        blocked = ndi.binary_dilation((win != 0) & (win != lab), eight)
        base_angles = rng.uniform(0, 2 * np.pi) + np.sort(rng.uniform(0, 2 * np.pi, n_neur[i]))
        for ang in base_angles:
            for (rr, cc), primary in _neurite_paths(rng, p, y, x, r, ang):
                _draw_neurite(win, blocked, thick[rows, cols], rr - rows.start, cc - cols.start, lab,
                              max(4, 1.5 * r) if primary else 0)
    return thick


def _neurite_paths(rng: np.random.Generator, p: dict[str, Any], y: float, x: float, r: float,
                   angle: float) -> list[tuple[tuple[np.ndarray, np.ndarray], bool]]:
    """A primary neurite leaving the soma (y, x, r) at ``angle`` and, with ``p_branch``, a side branch:
    ((rows, cols), primary) each."""
    length = r * p["neurite_length"] * rng.uniform(0.4, 1.6)
    main = _walk(rng, y + 0.7 * r * math.sin(angle), x + 0.7 * r * math.cos(angle), angle, length, 0.06)
    paths = [(main, True)]
    if rng.random() < p["p_branch"] and len(main[0]) > 12:
        k = int(rng.integers(len(main[0]) // 3, len(main[0]) * 3 // 4))
        side = angle + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
        paths.append((_walk(rng, float(main[0][k]), float(main[1][k]), side,
                            length * rng.uniform(0.3, 0.6), 0.08), False))
    return paths


def _draw_neurite(win: np.ndarray, blocked: np.ndarray, thick: np.ndarray, rr: np.ndarray, cc: np.ndarray,
                  lab: int, thick_length: float) -> None:
    """Draw a path (window coordinates) as ``lab`` into ``win`` up to where it leaves the window or meets
    ``blocked``; its first ``thick_length`` pixels get a second pixel below them (marked in ``thick``)."""
    inside = (rr >= 0) & (rr < win.shape[0]) & (cc >= 0) & (cc < win.shape[1])
    stop = np.flatnonzero(~inside)
    end = stop[0] if stop.size else len(rr)
    rr, cc = rr[:end], cc[:end]
    hit = np.flatnonzero(blocked[rr, cc])
    end = hit[0] if hit.size else len(rr)
    rr, cc = rr[:end], cc[:end]
    if not rr.size:
        return
    win[rr, cc] = lab
    if thick_length:
        n_thick = int(min(len(rr), thick_length))
        tr, tc = rr[:n_thick] + 1, cc[:n_thick]
        ok = (tr < win.shape[0]) & ~blocked[np.minimum(tr, win.shape[0] - 1), tc]
        win[tr[ok], tc[ok]] = lab
        thick[tr[ok], tc[ok]] = True


def _render_phase_contrast(rng: np.random.Generator, p: dict[str, Any], labels: np.ndarray, soma_mask: np.ndarray,
                           thick: np.ndarray) -> np.ndarray:
    """I = bg * illum * (1 - A*phase + H*(blur(phase) - phase)): the HxW uint8 image of a final label map."""
    H, W = labels.shape
    fg = labels > 0
    sign = np.ones(int(labels.max()) + 1)
    p_bright = 0.2 if rng.random() < 0.6 else 0.75
    sign[1:] = np.where(rng.random(len(sign) - 1) < p_bright, -1.0, 1.0)
    dist = ndi.distance_transform_edt(soma_mask)
    height = np.where(soma_mask, 0.5 + 0.5 * np.clip(dist / 3.0, 0, 1), 0.0)
    height = np.where(fg & ~soma_mask, 0.2, height)  # neurites: faint lines
    height = np.where(thick, 0.3, height)
    phase = ndi.gaussian_filter(sign[labels] * height * fg, 0.6)
    halo = ndi.gaussian_filter(phase, rng.uniform(1.5, 2.5)) - phase
    halo = np.where(soma_mask, 0.4 * halo, halo)  # a strong ring outside the soma, milder inside
    tex = _smooth_noise(rng, (H, W), 1.0) * fg
    A = p["contrast"] * rng.uniform(0.7, 1.3)
    Hh = p["halo"] * rng.uniform(0.7, 1.3)
    rel = 1 - A * phase * (1 + 0.3 * tex) + Hh * halo
    illum = _illumination(rng, p["illumination"], (H, W))
    debris = 0.02 * _smooth_noise(rng, (H, W), 2.0)
    level = rng.uniform(0.42, 0.58)
    img = ndi.gaussian_filter(level * illum * (rel + debris), 0.5)
    return _to_uint8(img + p["noise"] * level * rng.standard_normal((H, W)))


def _illumination(rng: np.random.Generator, amplitude: float, size: tuple[int, int]) -> np.ndarray:
    """A smooth uneven illumination field about 1: a random ramp, a vignette and slow noise."""
    H, W = size
    yy, xx = np.mgrid[0:H, 0:W]
    g_ang = rng.uniform(0, 2 * np.pi)
    ramp = ((yy - H / 2) * math.sin(g_ang) + (xx - W / 2) * math.cos(g_ang)) / max(H, W)
    vign = ((yy - H / 2) ** 2 + (xx - W / 2) ** 2) / (0.5 * max(H, W)) ** 2
    return (1 + amplitude * (rng.uniform(0.5, 1.0) * ramp - rng.uniform(0.2, 0.6) * vign
                             + 0.3 * _smooth_noise(rng, (H, W), max(H, W) / 5)))


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------

GENERATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "nuclei": nuclei,
    "plant": plant,
    "neural": neural,
}


def rng_for(kind: str, seed: int, index: int) -> np.random.Generator:
    """The generator for image ``index`` of ``kind``: depends only on (seed, kind, index)."""
    kind_key = zlib.crc32(kind.encode("utf-8"))  # stable across runs (str hash is salted)
    return np.random.default_rng(np.random.SeedSequence([int(seed), kind_key, int(index)]))


def generate(kind: str, n_images: int, image_size: int | tuple[int, int], seed: int,
             **params: Any) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(image_id, image, labels)`` for ``n_images`` synthetic images of ``kind``.

    ``image_id`` is ``f"{kind}_{index:04d}"``. Image ``index`` depends only on (``seed``, ``kind``,
    ``index``) and the params, so the first k images are the same whatever ``n_images`` is.
    Everything is checked before the first image is made: an unknown kind or parameter, or a bad
    value, raises :class:`~objguided.errors.ConfigError`.
    """
    if kind not in GENERATORS:
        raise ConfigError(f"unknown synthetic kind '{kind}'; known kinds: {_known_kinds()}")
    _resolve(kind, params)
    size = _size(image_size)
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 0:
        raise ConfigError(f"n_images must be a whole number >= 0, got {n_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    return _generate(kind, int(n_images), size, int(seed), params)


def _generate(kind: str, n_images: int, size: tuple[int, int], seed: int,
              params: dict[str, Any]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    fn = GENERATORS[kind]
    for index in range(n_images):
        image, labels = fn(rng_for(kind, seed, index), size, **params)
        yield f"{kind}_{index:04d}", image, labels
