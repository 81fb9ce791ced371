"""The classical ``watershed`` baseline: segmentation, tuning, scores, config."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from skimage.draw import disk

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset, write_sample
from objguided.errors import ConfigError
from objguided_methods.watershed import WatershedConfig, grid_search, params_from, proxy_score, segment

SIZE = 128


def draw(discs, size=SIZE, background=20, noise=6.0, seed=0, dark_on_light=False):
    """Discs ``(row, col, radius, brightness)`` on a flat background, with Gaussian noise."""
    img = np.full((size, size), float(background))
    labels = np.zeros((size, size), np.int32)
    for k, (r, c, rad, value) in enumerate(discs, start=1):
        rr, cc = disk((r, c), rad, shape=(size, size))
        img[rr, cc] = value
        labels[rr, cc] = k
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    if dark_on_light:
        img = 255 - img
    return np.clip(np.round(img), 0, 255).astype(np.uint8), labels


def touching_pair(seed=0, **kw):
    # two radius-20 discs whose centres are 36 px apart: they overlap by a 4-px lens
    return draw([(64, 46, 20, 220), (64, 82, 20, 220)], seed=seed, **kw)


def random_discs(seed, n=6, dark_on_light=False):
    rng = np.random.default_rng(seed)
    discs = []
    while len(discs) < n:
        rad = int(rng.integers(8, 14))
        r, c = (int(v) for v in rng.integers(rad + 2, SIZE - rad - 2, 2))
        if all(np.hypot(r - r2, c - c2) > rad + rad2 - 3 for r2, c2, rad2, _ in discs):
            discs.append((r, c, rad, int(rng.integers(150, 240))))
    return draw(discs, seed=seed, dark_on_light=dark_on_light)


def make_dataset(root, samples, n_val=None):
    ids = []
    for k, (img, lab) in enumerate(samples):
        write_sample(root, f"img{k:02d}", img, lab)
        ids.append(f"img{k:02d}")
    n_val = len(ids) if n_val is None else n_val
    split = {"train": ids[n_val:], "val": ids[:n_val], "test": [], "source": "seeded", "seed": 0}
    (root / "split.json").write_text(json.dumps(split))
    return CanonicalDataset(root, subset="train"), CanonicalDataset(root, subset="val")


def best_iou(mask, truth):
    return max(np.logical_and(mask, truth == i).sum() / np.logical_or(mask, truth == i).sum()
               for i in range(1, truth.max() + 1))


@pytest.fixture(scope="module")
def method():
    return methods.get("watershed")


def test_registered(method):
    assert "watershed" in methods.available()
    assert method.uses_gpu is False and method.Config is WatershedConfig


def test_separates_two_touching_discs(method):
    img, truth = touching_pair()
    (instances,) = method.predict(None, [img], method.make_config(), "cpu")
    assert len(instances) == 2
    for inst in instances:
        assert inst.mask.dtype == bool and inst.mask.shape == img.shape and inst.mask.any()
        assert best_iou(inst.mask, truth) > 0.8
    # one instance per true disc
    assert {int(np.bincount(truth[inst.mask]).argmax()) for inst in instances} == {1, 2}


def test_rgb_input(method):
    img, truth = touching_pair()
    (instances,) = method.predict(None, [np.repeat(img[..., None], 3, axis=2)], method.make_config(), "cpu")
    assert len(instances) == 2 and all(best_iou(i.mask, truth) > 0.8 for i in instances)


def test_excess_green_finds_plants_on_soil(method):
    truth = np.zeros((SIZE, SIZE), np.int32)
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[:] = (120, 100, 80)  # brown soil, brighter than the leaves in gray
    for k, (r, c) in enumerate([(40, 40), (80, 90)], start=1):
        rr, cc = disk((r, c), 15)
        img[rr, cc] = (40, 110, 30)
        truth[rr, cc] = k
    cfg = method.make_config({"signal": "exg"})
    (instances,) = method.predict(None, [img], cfg, "cpu")
    assert len(instances) == 2 and all(best_iou(i.mask, truth) > 0.8 for i in instances)


def test_scores_in_unit_interval_and_higher_for_brighter(method):
    img, truth = draw([(40, 40, 14, 240), (90, 90, 14, 150)], seed=3)
    (instances,) = method.predict(None, [img], method.make_config(), "cpu")
    assert len(instances) == 2
    assert all(0.0 < i.score <= 1.0 for i in instances)
    by_disc = {int(np.bincount(truth[i.mask]).argmax()): i.score for i in instances}
    assert by_disc[1] > by_disc[2]


def test_blank_image_has_no_instances(method):
    (instances,) = method.predict(None, [np.full((32, 32), 7, np.uint8)], method.make_config(), "cpu")
    assert instances == []


def test_tuning_picks_inverted_for_dark_on_light(method, tmp_path):
    train, val = make_dataset(tmp_path, [random_discs(s, dark_on_light=True) for s in range(4)])
    cfg = method.make_config({"signals": ["gray", "inverted"], "min_sizes": [10]})
    state = method.train(train, val, cfg, tmp_path / "work", "cpu")
    assert state["signal"] == "inverted"
    assert state["proxy_score"] > 0.7 and state["n_tune_images"] == 4 and state["tuned_on"] == "val"
    assert (tmp_path / "work" / "watershed_grid.json").is_file()
    # the predictions on a new dark-on-light image find its objects
    img, truth = random_discs(99, dark_on_light=True)
    (instances,) = method.predict(state, [img], cfg, "cpu")
    assert len(instances) == truth.max()


def test_tuned_parameters_are_stored_and_used(method, tmp_path):
    train, val = make_dataset(tmp_path, [random_discs(s) for s in range(3)])
    cfg = method.make_config({"signals": ["gray"], "background_sigmas": [10.0], "threshold_factors": [1.0],
                              "min_distances": [4], "sigmas": [1.0], "min_sizes": [25], "min_size": 10_000})
    state = method.train(train, val, cfg, tmp_path, "cpu")
    assert isinstance(state, dict)
    keys = ("signal", "background_sigma", "threshold_factor", "min_distance", "sigma", "min_size")
    assert {k: state[k] for k in keys} == {"signal": "gray", "background_sigma": 10.0, "threshold_factor": 1.0,
                                           "min_distance": 4, "sigma": 1.0, "min_size": 25}
    img, _ = random_discs(7)
    (tuned,) = method.predict(state, [img], cfg, "cpu")
    (untuned,) = method.predict(None, [img], cfg, "cpu")  # the config's default min_size=10000 drops all
    assert len(tuned) == 6 and untuned == []
    # a state that sets min_size is obeyed over the config
    (state_says,) = method.predict({**state, "min_size": 10_000}, [img], cfg, "cpu")
    assert state_says == []


def test_untuned_state_is_the_defaults(method, tmp_path):
    train, val = make_dataset(tmp_path, [random_discs(0)])
    state = method.train(train, val, method.make_config({"tune": False, "min_distance": 7}), tmp_path, "cpu")
    assert state["min_distance"] == 7 and state["proxy_score"] is None


def test_config_errors(method):
    with pytest.raises(ConfigError, match="unknown key 'min_dist'"):
        method.make_config({"min_dist": 3})
    with pytest.raises(ConfigError, match="threshold_factor"):
        method.make_config({"threshold_factor": "high"})
    with pytest.raises(ConfigError, match=r"signals\[1\]: expected one of gray, inverted, exg, auto, got 'red'"):
        method.make_config({"signals": ["gray", "red"]})
    with pytest.raises(ConfigError, match="min_distances"):
        method.make_config({"min_distances": [0]})
    with pytest.raises(ConfigError, match="tune_on"):
        method.make_config({"tune_on": "test"})


def test_proxy_score():
    truth = np.zeros((20, 20), np.int32)
    truth[2:8, 2:8], truth[10:18, 10:18] = 1, 2
    assert proxy_score(truth, truth) == 1.0
    assert proxy_score(np.where(truth == 2, 7, truth), truth) == 1.0  # ids need not agree
    shifted = np.zeros_like(truth)
    shifted[2:8, 3:9] = 1  # IoU 30/42 = 0.714 with object 1; object 2 missed
    expected = np.mean([1 / 2 if t < 30 / 42 else 0 for t in np.arange(0.5, 0.951, 0.05)])
    assert proxy_score(shifted, truth) == pytest.approx(expected)


def _synthetic():
    if importlib.util.find_spec("objguided.data.synthetic") is None:
        return None
    from objguided.data import synthetic

    return synthetic if hasattr(synthetic, "generate") else None


def tune_and_compare(samples, untuned=None):
    """(proxy of the tuned parameters, proxy of ``untuned`` (default: the config's defaults)).

    The tuning's speed is measured in benchmarks/tune_watershed.py, not here (a shared machine's load makes
    a timed test fail at random)."""
    images, truths = [s[0] for s in samples], [s[1] for s in samples]
    cfg = WatershedConfig()
    untuned = untuned or params_from(None, cfg)
    grid, scores = grid_search(images, truths, cfg)
    base = np.mean([proxy_score(segment(im, **untuned)[0], gt) for im, gt in zip(images, truths)])
    return float(scores.max()), float(base)


def test_tuning_beats_a_fixed_default_on_own_data():
    # dark-on-light discs: a fixed "gray" signal segments the background, tuning finds the polarity
    samples = [random_discs(s, n=8, dark_on_light=True) for s in range(4)]
    fixed = dict(signal="gray", threshold_factor=1.0, min_distance=5, sigma=0.0, min_size=10)
    tuned, base = tune_and_compare(samples, fixed)
    assert tuned > 0.9 and base < 0.1


@pytest.mark.skipif(_synthetic() is None, reason="objguided.data.synthetic not available yet")
def test_tuning_beats_untuned_default_on_synthetic_nuclei():
    samples = [(img, lab) for _, img, lab in _synthetic().generate("nuclei", 4, 128, 0)]
    tuned, base = tune_and_compare(samples)  # vs the config's own untuned defaults
    assert tuned > base + 0.03


def test_readme_example_method_works(monkeypatch):
    """The minimal example in methods/README.md registers and segments (in a throw-away registry)."""
    from pathlib import Path

    readme = (Path(methods.__file__).parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    code = "\n".join(line[3:] if line.startswith("   ") else line for line in code.splitlines())
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    import sys
    import types

    module = types.ModuleType("readme_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
    exec(compile(code, "methods/README.md", "exec"), module.__dict__)
    example = methods._REGISTRY["threshold"]
    img, truth = draw([(40, 40, 12, 220), (90, 90, 12, 220)])
    cfg = example.make_config({"min_size": 20})
    (instances,) = example.predict(example.train(None, None, cfg, None, "cpu"), [img], cfg, "cpu")
    assert len(instances) == 2 and all(best_iou(i.mask, truth) > 0.8 for i in instances)
    with pytest.raises(ConfigError):
        example.make_config({"minsize": 3})
