"""Tuning of the classical and dense baselines (issue #19): the watershed search's shared work gives the
scores of the plain per-combination pipeline, progress lines reach the log, a best value on a grid's edge
widens the grid and is recorded, and ``objguided methods`` shows the list-valued settings."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset, write_sample
from objguided_methods import _dense, dcan
from objguided_methods._tuning import Axis, widen
from objguided_methods.watershed import PARAMS, WatershedConfig, grid_search, proxy_score, search, segment, tuning_axes


def small_case():
    """Three 80x88 RGB images of discs (some touching), the last dark on light, with noise (fixed seeds)."""
    images, truths = [], []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        img = np.zeros((80, 88, 3)) + rng.uniform(20, 60, 3)
        lab = np.zeros((80, 88), np.int32)
        for k in range(1, 7):
            r, c, rad = rng.integers(12, 68), rng.integers(12, 76), rng.integers(6, 12)
            rr, cc = disk((r, c), rad, shape=lab.shape)
            img[rr, cc] = rng.uniform(120, 230, 3)
            lab[rr, cc] = k
        img += rng.normal(0, 12, img.shape)
        if seed == 2:
            img = 255 - img
        images.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
        truths.append(lab)
    return images, truths


def dataset(root, samples):
    ids = []
    for k, (img, lab) in enumerate(samples):
        write_sample(root, f"img{k:02d}", img, lab)
        ids.append(f"img{k:02d}")
    (root / "split.json").write_text(json.dumps({"train": [], "val": ids, "test": [], "source": "seeded", "seed": 0}))
    return CanonicalDataset(root, subset="train"), CanonicalDataset(root, subset="val")


# ------------------------------------------------------------------------------------- same results, faster


#: chosen on small_case() by the default grid of methods/watershed.py at commit bc59540 (before the
#: speed-up: one signal, foreground and watershed per combination, remove_small + proxy_score each)
PINNED = {"signal": "auto", "background_sigma": 10.0, "threshold_factor": 0.85, "min_distance": 5, "sigma": 0.0,
          "min_size": 10}
PINNED_SCORE = 0.5958333333333333


@pytest.mark.parametrize("jobs", [1, 2])
def test_default_grid_chooses_the_pinned_parameters(jobs):
    images, truths = small_case()
    grid, scores = grid_search(images, truths, WatershedConfig(), jobs=jobs)
    assert len(grid) == 384
    best = int(np.argmax(scores))
    assert grid[best] == PINNED and scores[best] == PINNED_SCORE


def test_shared_work_scores_every_combination_as_the_plain_pipeline():
    # auto beside gray and inverted (auto reuses one of them), a gray image where exg falls back to auto,
    # two background sigmas and thresholds, min_size 0 (keeps everything) and one above the smallest disc
    images, truths = small_case()
    images = [images[0], images[1].mean(axis=2).round().astype(np.uint8), images[2]]
    cfg = WatershedConfig(signals=["auto", "gray", "inverted", "exg"], background_sigmas=[0.0, 10.0],
                          threshold_factors=[0.7, 1.0], min_distances=[3, 8], sigmas=[0.0, 1.0],
                          min_sizes=[0, 150])
    axes = tuning_axes(cfg, images)
    grid, scores = search(images, truths, axes)
    assert grid == [dict(zip(PARAMS, combo)) for combo in itertools.product(*(axes[k] for k in PARAMS))]
    for params, score in zip(grid, scores):
        plain = np.mean([proxy_score(segment(im, **params)[0], gt) for im, gt in zip(images, truths)])
        assert score == pytest.approx(plain, abs=1e-12), params


def test_tuning_processes_follow_the_jobs_threads(monkeypatch):
    from objguided_methods.watershed import _jobs

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Snakemake sets for a one-thread job
    assert _jobs(0, 26) == 1 and _jobs(3, 26) == 3 and _jobs(3, 2) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _jobs(0, 1000) == len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------------------------ progress


def test_watershed_tuning_logs_progress_and_records_it(tmp_path, caplog):
    train, val = dataset(tmp_path, list(zip(*small_case())))
    method = methods.get("watershed")
    cfg = method.make_config({"signals": ["auto"], "background_sigmas": [0.0], "threshold_factors": [0.85, 1.0],
                              "min_distances": [5], "sigmas": [0.0], "min_sizes": [10], "tune_jobs": 1})
    with caplog.at_level(logging.INFO, logger="objguided_methods"):
        method.train(train, val, cfg, tmp_path / "work", "cpu")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("watershed tuning: ")]
    assert any(line.startswith("watershed tuning: 1/3 (images)") and "best so far" in line for line in lines)
    assert any(line.startswith("watershed tuning: 3/3 (images)") for line in lines)


def oracle_maps(seed: int):
    """DCAN-like maps of discs in touching pairs (4 px apart): p_obj 0.95 inside, then 0.75, 0.6 and 0.45 at
    1, 2 and 3 px outside, so a threshold up to 0.6 merges each pair and 0.7 grows every disc by a pixel;
    no contour."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((72, 72), np.int32)
    for k, (r, c) in enumerate([(18, 16), (18, 36), (50, 30), (50, 50)], start=1):
        rr, cc = disk((r + rng.integers(-1, 2), c), 8, shape=labels.shape)
        labels[rr, cc] = k
    outside = ndi.distance_transform_edt(labels == 0)
    p_obj = np.select([labels > 0, outside <= 1, outside <= 2, outside <= 3], [0.95, 0.75, 0.6, 0.45], 0.05)
    return (p_obj.astype(np.float32), np.full(labels.shape, 0.05, np.float32)), labels


def dcan_tuning(maps, truths, thresholds, max_widen, what="dcan tuning"):
    cfg = dcan.DCANConfig(object_thresholds=thresholds, contour_thresholds=[0.5], min_sizes=[5], dilations=[0],
                          max_widen=max_widen)
    combos = _dense.grid({"object_threshold": thresholds, "contour_threshold": [0.5]})
    finals = _dense.grid({"min_size": [5], "dilation": [0]})
    return _dense.tune_widened(maps, truths, combos, lambda m, p: dcan.core_labels(m[0], m[1], **p), finals,
                               lambda m, core, p: dcan.finish(core, **p)[0], dcan.widen_axes(cfg), max_widen, what)


def test_dense_tuning_logs_progress(caplog):
    maps, truths = zip(*(oracle_maps(s) for s in range(2)))
    with caplog.at_level(logging.INFO, logger="objguided_methods"):
        dcan_tuning(maps, truths, [0.8, 0.9], max_widen=0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dcan tuning: ")
             and "(image " in r.getMessage()]
    assert lines[0].startswith("dcan tuning: 1/4 (image 1/2, combination 1/2)") and "best so far none yet" in lines[0]
    assert lines[-1].startswith("dcan tuning: 4/4 (image 2/2, combination 2/2)")
    assert "best so far 1.0000 at {'object_threshold': 0.8, 'contour_threshold': 0.5" in lines[-1]


# ------------------------------------------------------------------------------------------ edge widening


def test_best_threshold_at_the_grid_top_widens_the_grid(caplog):
    # thresholds up to 0.6 merge the pairs, 0.7 grows the discs: the best lies above the grid's top, 0.7
    maps, truths = zip(*(oracle_maps(s) for s in range(2)))
    with caplog.at_level(logging.INFO, logger="objguided_methods"):
        best, score, rows, _, record = dcan_tuning(maps, truths, [0.5, 0.6, 0.7], max_widen=3)
    assert max(r["proxy_score"] for r in rows) < 0.9  # the grid alone misses it
    assert best["object_threshold"] == 0.8 and score == 1.0
    assert record["at_edge_before"][0] == {"param": "object_threshold", "value": 0.7, "edge": "top"}
    assert [(s["value"], s["became_best"]) for s in record["steps"]] == [(0.8, True), (0.9, False)]
    assert record["at_edge_after"] == [] and record["values"] == {"object_threshold": [0.5, 0.6, 0.7, 0.8, 0.9]}
    assert any("object_threshold = 0.7 was at the top edge of its grid; tried 0.8" in r.getMessage()
               for r in caplog.records)


def test_edge_without_widening_is_recorded_and_warned(caplog):
    maps, truths = zip(*(oracle_maps(s) for s in range(2)))
    with caplog.at_level(logging.INFO, logger="objguided_methods"):
        best, _, _, _, record = dcan_tuning(maps, truths, [0.3, 0.5, 0.7], max_widen=0)
    assert best["object_threshold"] == 0.7 and record["steps"] == []
    assert record["at_edge_after"] == [{"param": "object_threshold", "value": 0.7, "edge": "top"}]
    assert any(r.levelno == logging.WARNING and "object_threshold = 0.7 is still at the top edge" in r.getMessage()
               for r in caplog.records)


def test_widening_stops_at_the_parameter_bound():
    # a probability threshold is in (0, 1]: from 0.9 the next step is 1.0, and there it stops
    score = {0.8: 0.1, 0.9: 0.2, 1.0: 0.3}
    axis = Axis("t", (0.8, 0.9), lo=0.0, hi=1.0, gt_lo=True)
    best, value, record = widen({"t": 0.9}, 0.2, [axis], lambda p: score[p["t"]], max_steps=5, what="x")
    assert best == {"t": 1.0} and value == 0.3
    assert [s["value"] for s in record["steps"]] == [1.0]
    assert record["at_edge_after"] == [] and record["at_bound"] == [{"param": "t", "value": 1.0, "edge": "top"}]


def speck_images():
    """Discs of ~250 px plus bright 4x4 and 5x5 specks: the best ``min_size`` lies between 25 and 250."""
    samples = []
    for seed in range(2):
        rng = np.random.default_rng(seed)
        img = np.full((96, 96), 30.0)
        lab = np.zeros((96, 96), np.int32)
        for k, (r, c) in enumerate([(24, 24), (24, 70), (70, 24), (70, 70)], start=1):
            rr, cc = disk((r, c), 9)
            img[rr, cc], lab[rr, cc] = 200, k
        for side, (r, c) in zip([4, 5, 4, 5, 4], [(47, 10), (47, 47), (47, 85), (10, 47), (85, 47)]):
            img[r:r + side, c:c + side] = 200
        img += rng.normal(0, 4, img.shape)
        samples.append((np.clip(img, 0, 255).astype(np.uint8), lab))
    return samples


def test_watershed_min_size_on_the_grid_top_widens_and_is_stored(tmp_path):
    train, val = dataset(tmp_path, speck_images())
    method = methods.get("watershed")
    cfg = method.make_config({"signals": ["gray"], "background_sigmas": [0.0], "threshold_factors": [1.0],
                              "min_distances": [8], "sigmas": [1.0], "min_sizes": [10, 20], "tune_jobs": 1})
    state = method.train(train, val, cfg, tmp_path / "work", "cpu")
    widening = state["widening"]
    assert widening["at_edge_before"] == [{"param": "min_size", "value": 20, "edge": "top"}]
    # 10 keeps every speck, 20 the 5x5 ones, 30 none: one step past the grid's top is the best
    assert state["min_size"] == 30 and state["proxy_score"] == 1.0
    assert [(s["value"], s["became_best"]) for s in widening["steps"]] == [(30, True), (40, False)]
    assert widening["at_edge_after"] == []
    saved = json.loads((tmp_path / "work" / "watershed_grid.json").read_text())
    assert saved["chosen"]["widening"] == widening


# ---------------------------------------------------------------------------------------- methods verb


def test_methods_verb_shows_list_valued_settings(repo):
    out = subprocess.run([sys.executable, "-P", "-m", "objguided", "methods"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout
    rows = {line.split(":", 1)[0].split(" ")[0]: line for line in out.splitlines()}
    assert "object_thresholds=[0.3, 0.4, 0.5, 0.6, 0.7]" in rows["dcan"]
    assert "crop_scales=[0.8, 0.9, 1.0, 1.1, 1.25]" in rows["dcan"] and "lr_milestones=[]" in rows["dcan"]
    assert "min_samples_values=[10, 50]" in rows["cosine_embedding"]
    assert "threshold_factors=[0.7, 0.85, 1.0, 1.2]" in rows["watershed"] and "max_widen=3" in rows["watershed"]
