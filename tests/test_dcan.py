"""The ``dcan`` baseline: contour targets, the object/contour fusion, scores, config, and learning."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from skimage.draw import disk

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset, write_sample
from objguided.data.synthetic import generate
from objguided.errors import ConfigError
from objguided_methods.base import Instance
from objguided_methods.dcan import (
    build_net,
    contour_target,
    finish,
    instances_from,
    make_loss,
    make_targets,
    segment,
    tune_post,
)

TINY = {"width": 4, "input_size": 32, "batch_size": 2, "max_steps": 2, "progress": False, "num_workers": 0}


def method():
    return methods.get("dcan")


def make_dataset(root, n=4, size=96, seed=1, kind="nuclei"):
    """A canonical folder, every image in train (the tests pass the train set as val too: they tune on what
    they fit)."""
    ids = []
    for image_id, image, labels in generate(kind, n, size, seed):
        write_sample(root, image_id, image, labels)
        ids.append(image_id)
    (root / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "seeded",
                                                 "seed": seed}))
    return root


def two_touching_discs(size=64, radius=12):
    labels = np.zeros((size, size), np.int32)
    for k, c in enumerate((size // 2 - radius + 1, size // 2 + radius - 1), start=1):
        rr, cc = disk((size // 2, c), radius, shape=labels.shape)
        labels[rr, cc] = k  # the second overwrites a 2-px lens: the discs touch along a line
    return labels


# ---------------------------------------------------------------------------------------------------
# targets


@pytest.mark.parametrize("width", [1, 2, 3])
def test_contour_band_has_the_chosen_width(width):
    labels = np.zeros((41, 41), np.int32)
    rr, cc = disk((20, 20), 15, shape=labels.shape)
    labels[rr, cc] = 7
    band = contour_target(labels, width) > 0
    row = band[20]  # a horizontal line through the centre: the band is `width` px on each side
    cols = np.flatnonzero(labels[20])
    assert row[cols[0]:cols[0] + width].all() and not row[cols[0] + width]
    assert row[cols[-1] - width + 1:cols[-1] + 1].all() and not row[cols[-1] - width]
    assert not band[labels == 0].any()  # inner bands only
    assert band.sum() < (labels > 0).sum()


def test_touching_instances_are_separated_by_two_bands():
    labels = two_touching_discs()
    band = contour_target(labels, 2) > 0
    row = labels[32]
    border = np.flatnonzero(np.diff(row) != 0)
    seam = [b for b in border if row[b] == 1 and row[b + 1] == 2][0]
    assert band[32, seam - 1:seam + 3].all()  # 2 px on each side of the seam
    targets = make_targets(method().make_config({"contour_width": 2}))(labels, None)
    assert set(targets) == {"object", "contour"} and targets["object"].dtype == np.float32
    assert np.array_equal(targets["object"] > 0, labels > 0)


# ---------------------------------------------------------------------------------------------------
# fusion (post-processing) on hand-made probability maps


def maps_from(labels, width=2):
    p_obj = (labels > 0).astype(np.float32) * 0.9 + 0.05
    p_cnt = contour_target(labels, width) * 0.9 + 0.05
    return p_obj, p_cnt


def test_fusion_splits_touching_discs_whose_contour_is_predicted():
    labels = two_touching_discs()
    p_obj, p_cnt = maps_from(labels)
    final, core = segment(p_obj, p_cnt, object_threshold=0.5, contour_threshold=0.5, min_size=5, dilation=2)
    assert final.max() == 2 and core.max() == 2
    for k in (1, 2):  # each predicted object is one disc, recovered by the dilation
        overlap = np.bincount(labels[final == k], minlength=3)
        truth = np.argmax(overlap)
        iou = (labels[final == k] == truth).sum() / np.logical_or(final == k, labels == truth).sum()
        assert iou > 0.85
    # without the contour the two discs would be one object
    merged, _ = segment(p_obj, np.zeros_like(p_cnt), min_size=5, dilation=0)
    assert merged.max() == 1


def test_fusion_fills_holes_drops_small_and_scores():
    labels = two_touching_discs()
    p_obj, p_cnt = maps_from(labels)
    p_obj[32, 20] = 0.1  # a hole in the first disc's interior
    p_obj[2:4, 2:4] = 0.95  # a 4-px speck
    final, core = segment(p_obj, p_cnt, min_size=5, dilation=2)
    assert final.max() == 2 and final[32, 20] > 0
    inst = instances_from(final, core, p_obj, p_cnt)
    assert len(inst) == 2 and all(isinstance(i, Instance) and i.mask.dtype == bool for i in inst)
    # score = mean p_obj * (1 - mean p_contour) over the core
    for i in inst:
        assert 0.0 < i.score <= 1.0
        assert abs(i.score - 0.95 * 0.95) < 0.05
    assert instances_from(*finish(np.zeros((8, 8), np.int32), 0, 0), np.zeros((8, 8)), np.zeros((8, 8))) == []


# ---------------------------------------------------------------------------------------------------
# config


def test_defaults():
    cfg = method().make_config({})
    assert (cfg.width, cfg.contour_width, cfg.contour_loss, cfg.object_threshold, cfg.contour_threshold,
            cfg.min_size) == (64, 2, "plain", 0.5, 0.5, 5)
    assert method().uses_gpu


@pytest.mark.parametrize("overrides, match", [
    ({"widht": 8}, "unknown key 'widht'"),
    ({"width": "wide"}, r"width: expected an integer >= 1, got 'wide'"),
    ({"width": 0}, r"width: expected an integer >= 1"),
    ({"input_size": 100}, r"input_size: expected a multiple of 16"),
    ({"contour_loss": "focal"}, r"contour_loss: expected one of plain, balanced|contour_loss: expected one of"),
    ({"object_threshold": 1.0}, r"object_threshold: expected a number in \(0, 1\)"),
    ({"object_thresholds": []}, r"object_thresholds: expected a non-empty list"),
    ({"dilations": [1, -1]}, r"dilations\[1\]: expected an integer >= 0, got -1"),
    ({"optimizer": "rmsprop"}, r"optimizer: expected one of"),
    ({"max_steps": 0}, r"max_steps: expected an integer >= 1 or null, got 0"),
    ({"crop_scales": [1.0, 0]}, r"crop_scales"),
    ({"tune_on": "train"}, r"tune_on: expected one of val, none"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        method().make_config(overrides)


# ---------------------------------------------------------------------------------------------------
# network, loss, training path


def test_network_shapes_and_loss_terms():
    cfg = method().make_config({"width": 4, "input_size": 32})
    net = build_net(4)
    x = torch.randn(2, 3, 32, 48)
    obj, cnt = net(x)
    assert obj.shape == (2, 3, 32, 48) and cnt.shape == (2, 3, 32, 48)
    labels = two_touching_discs(32, 6)
    t = make_targets(cfg)(labels, None)
    batch = (torch.randn(1, 3, 32, 32), {k: torch.from_numpy(v)[None] for k, v in t.items()})
    terms = make_loss(cfg)(net, batch)
    assert {"total", "object", "contour", "aux"} <= set(terms) and torch.isfinite(terms["total"])
    assert int(net.steps) == 1  # the w_a schedule's step count lives in the model


def test_short_training_predicts_at_the_original_size(tmp_path):
    data = make_dataset(tmp_path / "data", n=2, size=40)
    ds = CanonicalDataset(data, "train")
    m = method()
    cfg = m.make_config({**TINY, "object_thresholds": [0.5], "contour_thresholds": [0.5]})
    torch.manual_seed(0)
    state = m.train(ds, ds, cfg, tmp_path / "run", "cpu")
    assert set(state["post"]) == {"object_threshold", "contour_threshold", "min_size", "dilation"}
    assert state["tuning"]["tuned_on"] == "val" and (tmp_path / "run" / "dcan_tuning.json").is_file()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (37, 53), dtype=np.uint8), rng.integers(0, 255, (20, 70, 3), dtype=np.uint8)]
    for image, inst in zip(images, m.predict(state, iter(images), cfg, "cpu")):
        assert all(i.mask.shape == image.shape[:2] and 0 < i.score <= 1 for i in inst)


# ---------------------------------------------------------------------------------------------------
# learning


#: the learning test's schedule (2 shared CPU cores; see methods/README_dcan.md)
LEARN = {"width": 8, "batch_norm": True, "input_size": 96, "batch_size": 4, "lr": 3e-3, "max_steps": 200,
         "aux_decay_every": 0,
         "progress": False, "log_every": 20, "max_tune_images": 0}


def ap50(data, state, cfg, tmp_path, name):
    from objguided.metrics.coco import encode_instances, write_predictions
    from objguided.metrics.score import score_predictions

    ds = CanonicalDataset(data, "train")
    records = []
    for image_id, inst in zip(ds.ids, method().predict(state, (s.image for s in ds), cfg, "cpu")):
        records.extend(encode_instances(image_id, inst))
    write_predictions(tmp_path / f"{name}.json", records)
    metrics = score_predictions(data, tmp_path / f"{name}.json", split_path=data / "split.json", subset="train",
                                extras=False)
    return float(metrics["ap_seg"][0])


@pytest.mark.slow
def test_learns_to_segment_its_training_images(tmp_path):
    """A short CPU run from scratch clearly beats the untrained network (both tuned the same way)."""
    data = make_dataset(tmp_path / "data", n=4, size=96, seed=1)
    ds = CanonicalDataset(data, "train")
    m = method()
    cfg = m.make_config(LEARN)
    torch.manual_seed(0)
    untrained = build_net(cfg.width).eval()
    post, _ = tune_post(untrained, ds, cfg, "cpu")
    before = ap50(data, {"model": untrained.state_dict(), "net": {"width": cfg.width}, "post": post}, cfg,
                  tmp_path, "before")
    started = time.perf_counter()
    torch.manual_seed(0)
    state = m.train(ds, ds, cfg, tmp_path / "run", "cpu")
    after = ap50(data, state, cfg, tmp_path, "after")
    seconds = time.perf_counter() - started
    print(f"dcan learning test: APseg@0.5 untrained {before:.3f} -> trained {after:.3f} after "
          f"{cfg.max_steps} steps, {seconds:.0f} s (train + tune + predict)")
    assert after >= before + 0.3
