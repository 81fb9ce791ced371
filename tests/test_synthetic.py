"""The embedded synthetic datasets: determinism, label-map validity, each kind's character, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import skeletonize

from objguided.data import synthetic as syn
from objguided.data.synthetic import GENERATORS, generate, generator_params
from objguided.errors import ConfigError

KINDS = ("nuclei", "plant", "neural")
FOUR = ndi.generate_binary_structure(2, 1)


def batch(kind, n=6, size=128, seed=0, **params):
    return list(generate(kind, n, size, seed, **params))


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        m = (a > 0) & (b > 0) & (a != b)
        pairs |= {(min(x, y), max(x, y)) for x, y in zip(a[m].tolist(), b[m].tolist())}
    return pairs


def gray(image: np.ndarray) -> np.ndarray:
    return image.astype(float) if image.ndim == 2 else image.astype(float).mean(axis=2)


# --------------------------------------------------------------------------------------------------
# API and determinism
# --------------------------------------------------------------------------------------------------


def test_generators_registry():
    assert set(GENERATORS) == set(KINDS)
    for kind in KINDS:
        params = generator_params(kind)
        assert params and set(params) == set(syn.PARAM_HELP[kind])
        assert all(syn.PARAM_HELP[kind][k] for k in params)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_arrays_and_prefix_property(kind):
    a = batch(kind, 5, 96, seed=3)
    b = batch(kind, 5, 96, seed=3)
    prefix = batch(kind, 2, 96, seed=3)
    assert [i for i, _, _ in a] == [f"{kind}_{k:04d}" for k in range(5)]
    for (ia, xa, la), (ib, xb, lb) in zip(a, b):
        assert ia == ib and np.array_equal(xa, xb) and np.array_equal(la, lb)
    for (ia, xa, la), (ip, xp, lp) in zip(a, prefix):
        assert ia == ip and np.array_equal(xa, xp) and np.array_equal(la, lp)
    other = batch(kind, 1, 96, seed=4)
    assert not np.array_equal(a[0][1], other[0][1])
    assert not np.array_equal(a[0][1], a[1][1])  # images within a batch differ


@pytest.mark.parametrize("kind", KINDS)
def test_generator_called_directly_matches_generate(kind):
    (_, img, lab), = batch(kind, 1, 80, seed=9)
    img2, lab2 = GENERATORS[kind](syn.rng_for(kind, 9, 0), (80, 80))
    assert np.array_equal(img, img2) and np.array_equal(lab, lab2)
    # passing every default explicitly changes nothing
    (_, img3, lab3), = batch(kind, 1, 80, seed=9, **generator_params(kind))
    assert np.array_equal(img, img3) and np.array_equal(lab, lab3)


# --------------------------------------------------------------------------------------------------
# label-map validity and image format
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [64, (96, 150)])
def test_label_maps_valid(kind, size):
    h, w = (size, size) if isinstance(size, int) else size
    for _, img, lab in batch(kind, 8, size, seed=1):
        assert img.dtype == np.uint8
        if kind == "neural":
            assert img.shape == (h, w)
        else:
            assert img.shape == (h, w, 3)
        assert lab.dtype == np.int32 and lab.shape == (h, w)
        n = int(lab.max())
        assert n >= 1 and n <= np.iinfo(np.uint16).max
        assert np.array_equal(np.unique(lab), np.arange(n + 1))  # 0 and 1..n, consecutive
        for i, sl in enumerate(ndi.find_objects(lab), start=1):
            m = lab[sl] == i
            assert m.sum() >= 9 and m.shape[0] >= 3 and m.shape[1] >= 3, (kind, i)
            assert ndi.label(m, FOUR)[1] == 1, f"{kind}: instance {i} is not one 4-connected piece"


def test_clean_labels_drops_hidden_small_and_fragments():
    lab = np.zeros((20, 20), np.int32)
    lab[0:6, 0:6] = 2  # fine
    lab[10:12, 10:12] = 5  # too small: dropped
    lab[15:20, 0:8] = 7  # main piece
    lab[15, 12] = 7  # stray piece of 7
    new, kept = syn._clean_labels(lab, to_neighbour=False)
    assert kept.tolist() == [2, 7]
    assert np.array_equal(np.unique(new), [0, 1, 2])
    assert new[15, 12] == 0 and (new == 2).sum() == 40


def test_round_trip_through_canonical_format(tmp_path):
    from objguided.data.canonical import read_image, read_label_map, write_sample

    for kind in KINDS:
        image_id, img, lab = batch(kind, 1, 64, seed=2)[0]
        write_sample(tmp_path, image_id, img, lab)
        assert np.array_equal(read_image(tmp_path / "images" / f"{image_id}.png"), img)
        assert np.array_equal(read_label_map(tmp_path / "labels" / f"{image_id}.png"), lab)


# --------------------------------------------------------------------------------------------------
# each kind's character
# --------------------------------------------------------------------------------------------------


def test_nuclei_counts_touching_and_polarity():
    data = batch("nuclei", 12, 128, seed=0)
    counts = [int(lab.max()) for _, _, lab in data]
    assert all(5 <= c <= 40 for c in counts), counts
    assert max(counts) - min(counts) >= 10  # varied density
    touching = sum(len(touching_pairs(lab)) for _, _, lab in data)
    assert touching >= 5, "nuclei should touch / clump in some images"
    for _, img, _ in data:  # always 3 channels; fluorescence is gray in all three
        assert img.shape[2] == 3
    # fluorescence: bright on dark; stain-like: dark on light; both easy to threshold
    for p_stained, brighter in ((0.0, True), (1.0, False)):
        for _, img, lab in batch("nuclei", 3, 128, seed=5, p_stained=p_stained):
            g = gray(img)
            fg, bg = g[lab > 0].mean(), g[lab == 0].mean()
            assert (fg > bg + 20) if brighter else (fg < bg - 20)
    sizes = [np.bincount(lab.ravel())[1:].mean() for _, _, lab in data]
    assert max(sizes) > 2 * min(sizes)  # nucleus size varies between images


def test_nuclei_count_scales_with_area():
    small = [int(lab.max()) for _, _, lab in batch("nuclei", 6, 128, seed=0)]
    large = [int(lab.max()) for _, _, lab in batch("nuclei", 3, 384, seed=0)]
    assert np.mean(large) > 2 * np.mean(small)
    assert max(large) <= 150


def test_plant_leaves_overlap_and_meet_at_centre():
    p = syn._resolve("plant", {})
    occluded = 0
    for i, (_, img, lab) in enumerate(batch("plant", 6, 128, seed=0)):
        raw, leaves, full_area, (cy, cx), radius = syn._plant_scene(syn.rng_for("plant", 0, i), (128, 128), p)
        assert 5 <= int(lab.max()) <= 20 and int(lab.max()) <= len(leaves)
        visible = np.bincount(raw.ravel(), minlength=len(full_area))[1:]
        occluded += int(np.sum(visible < 0.9 * full_area[1:]))
        # every leaf's stalk starts at the rosette centre
        assert all(np.hypot(lf.base_y - cy, lf.base_x - cx) < 0.1 * radius for lf in leaves)
        # ... and the visible leaves reach in towards it
        yy, xx = np.mgrid[:128, :128]
        d = np.hypot(yy - cy, xx - cx)
        nearest = np.array([d[lab == k].min() for k in range(1, int(lab.max()) + 1)]) / radius
        assert nearest.max() < 0.65 and np.median(nearest) < 0.35, nearest
        # leaves touch each other (overlap is resolved by occlusion, not by gaps)
        assert len(touching_pairs(lab)) >= int(lab.max()) - 1
        # green leaves on a brownish background
        r, g, b = (img[..., c].astype(float) for c in range(3))
        assert g[lab > 0].mean() > r[lab > 0].mean() and g[lab > 0].mean() > b[lab > 0].mean()
        assert r[lab == 0].mean() > b[lab == 0].mean()
    assert occluded >= 6, "some leaves should be partly hidden by younger ones"


def test_neural_thin_protrusions_and_low_contrast():
    data = batch("neural", 6, 128, seed=0)
    counts = [int(lab.max()) for _, _, lab in data]
    assert all(3 <= c <= 30 for c in counts), counts
    spidery = 0
    for _, img, lab in data:
        for k in range(1, int(lab.max()) + 1):
            m = lab == k
            eq_diam = 2 * np.sqrt(m.sum() / np.pi)
            if skeletonize(m).sum() > 2.5 * eq_diam:
                spidery += 1
        # thin: a 3x3 opening removes a good part of the foreground (the neurites)
        fg = lab > 0
        opened = ndi.binary_opening(fg, np.ones((3, 3), bool))
        assert opened.sum() < 0.9 * fg.sum()
        # low contrast: cells are not separable from the background by a global threshold
        g = gray(img)
        assert abs(np.median(g[fg]) - np.median(g[~fg])) < 0.15 * 255
        t = threshold_otsu(g)
        iou = max(
            ((g > t) & fg).sum() / ((g > t) | fg).sum(),
            ((g <= t) & fg).sum() / ((g <= t) | fg).sum(),
        )
        assert iou < 0.5, iou
    assert spidery >= 5, "some cells should have long thin neurites"


def test_nuclei_fluorescence_is_threshold_easy_unlike_neural():
    # a sanity contrast for the test above: the same Otsu check succeeds on fluorescence nuclei
    for _, img, lab in batch("nuclei", 3, 128, seed=5, p_stained=0.0):
        g = gray(img)
        t = threshold_otsu(g)
        fg = lab > 0
        assert ((g > t) & fg).sum() / ((g > t) | fg).sum() > 0.6


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def test_unknown_kind_lists_known_kinds():
    with pytest.raises(ConfigError, match="nuclei.*plant|neural"):
        generate("cells", 1, 64, 0)
    with pytest.raises(ConfigError, match="known kinds"):
        generator_params("cells")


def test_unknown_param_names_the_key_and_fails_eagerly():
    with pytest.raises(ConfigError, match="'radius'"):
        generate("nuclei", 0, 64, 0, radius=5)  # raised at the call, before any iteration
    with pytest.raises(ConfigError, match="'n_leaves'"):
        GENERATORS["plant"](np.random.default_rng(0), (64, 64), n_leaves=3)


@pytest.mark.parametrize("kind, params", [
    ("nuclei", {"min_count": 10, "max_count": 5}),
    ("nuclei", {"min_radius": -1.0}),
    ("plant", {"max_count": "many"}),
    ("plant", {"min_count": 2.5}),
    ("neural", {"p_branch": 1.5}),
    ("neural", {"min_count": None}),
])
def test_bad_param_values(kind, params):
    with pytest.raises(ConfigError):
        generate(kind, 1, 64, 0, **params)


@pytest.mark.parametrize("args", [(1, 8, 0), (1, (64,), 0), (-1, 64, 0), (1, 64, -2), (1, 64, 1.5)])
def test_bad_sizes_counts_seeds(args):
    with pytest.raises(ConfigError):
        generate("nuclei", *args)
