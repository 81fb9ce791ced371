"""The peer methods ``cellpose`` and ``stardist``: thin adapters over the real packages (the ``peers`` extra).

Without the extra, the modules still import (the registry imports every method), their configs are checked
and training says how to install what is missing. With it, each learns to segment a few synthetic nuclei
images in a short CPU run (figures in methods/README_cellpose.md and methods/README_stardist.md).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import numpy as np
import pytest

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset, write_sample
from objguided.data.synthetic import generate
from objguided.errors import ConfigError
from objguided_methods.base import Instance

HAVE_CELLPOSE = importlib.util.find_spec("cellpose") is not None
HAVE_STARDIST = importlib.util.find_spec("stardist") is not None and importlib.util.find_spec("tensorflow") is not None
NO_CELLPOSE = "cellpose is not installed (the peers extra: pip install -e .[peers])"
NO_STARDIST = "stardist/tensorflow are not installed (the peers extra: pip install -e .[peers])"


def make_dataset(root, n=4, size=96, seed=1):
    """A canonical folder with every image in train (the learning tests score what they fit)."""
    ids = []
    for image_id, image, labels in generate("nuclei", n, size, seed):
        write_sample(root, image_id, image, labels)
        ids.append(image_id)
    (root / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "seeded",
                                                 "seed": seed}))
    return root


def ap50(data, predict, tmp_path, name):
    """APseg@0.5 of ``predict(images)`` on the train images, with the project's evaluator."""
    from objguided.metrics.coco import encode_instances, write_predictions
    from objguided.metrics.score import score_predictions

    ds = CanonicalDataset(data, "train")
    records = []
    for image_id, inst in zip(ds.ids, predict(s.image for s in ds)):
        records.extend(encode_instances(image_id, inst))
    write_predictions(tmp_path / f"{name}.json", records)
    metrics = score_predictions(data, tmp_path / f"{name}.json", split_path=data / "split.json", subset="train",
                                extras=False)
    return float(metrics["ap_seg"][0])


# ---------------------------------------------------------------------------------------------------
# without the packages


def test_both_are_registered_and_import_without_their_packages():
    assert {"cellpose", "stardist"} <= set(methods.available())
    import objguided_methods.cellpose as mc
    import objguided_methods.stardist as ms

    # importing the adapters imports neither package nor TensorFlow
    for mod in (mc, ms):
        assert "cellpose" not in vars(mod) and "tensorflow" not in vars(mod) and "stardist" not in vars(mod)
    assert methods.get("cellpose").uses_gpu and not methods.get("stardist").uses_gpu


def test_defaults_follow_the_packages():
    cp = methods.get("cellpose").make_config({})
    assert (cp.pretrained, cp.epochs, cp.batch_size, cp.learning_rate, cp.diam_mean, cp.bsize, cp.channels,
            cp.flow_threshold, cp.cellprob_threshold, cp.min_size) == (None, 500, 8, 0.005, 30.0, 224, [0, 0],
                                                                       0.4, 0.0, 15)
    sd = methods.get("stardist").make_config({})
    assert (sd.pretrained, sd.n_rays, sd.grid, sd.patch_size, sd.batch_size, sd.learning_rate, sd.epochs,
            sd.steps_per_epoch) == (None, 32, 2, 256, 4, 3e-4, 400, 100)


@pytest.mark.parametrize("name, overrides, match", [
    ("cellpose", {"epoch": 3}, "unknown key 'epoch'"),
    ("cellpose", {"epochs": "many"}, r"epochs: expected an integer >= 0, got 'many'"),
    ("cellpose", {"epochs": 0}, r"epochs: 0 \(no training\) needs a pretrained model"),
    ("cellpose", {"batch_size": 0}, r"batch_size: expected an integer >= 1"),
    ("cellpose", {"bsize": 100}, r"bsize: expected an integer >= 32 and a multiple of 8"),
    ("cellpose", {"channels": [0]}, r"channels: expected a list of 2 items \(each item an integer in \[0, 3\]\), "
                                    r"got \[0\]"),
    ("cellpose", {"channels": [0, 4]}, r"channels\[1\]: expected an integer in \[0, 3\], got 4"),
    ("cellpose", {"diameter": -3}, r"diameter: expected a number > 0 or null, got -3"),
    ("cellpose", {"niter": 0}, r"niter: expected an integer >= 1 or null, got 0"),
    ("cellpose", {"pretrained": ""}, r"pretrained: expected a non-empty string or null"),
    ("cellpose", {"learning_rate": 0}, r"learning_rate: expected a number > 0"),
    ("stardist", {"n_ray": 16}, "unknown key 'n_ray'"),
    ("stardist", {"n_rays": 2}, r"n_rays: expected an integer >= 3"),
    ("stardist", {"grid": 3}, r"grid: expected a power of 2"),
    ("stardist", {"patch_size": 100}, r"patch_size: expected a multiple of 8"),
    ("stardist", {"input": "rgba"}, r"input: expected one of gray, rgb"),
    ("stardist", {"norm_percentiles": [99, 1]}, r"norm_percentiles"),
    ("stardist", {"prob_thresh": 1.5}, r"prob_thresh: expected a number in \(0, 1\) or null"),
    ("stardist", {"epochs": 0}, r"epochs: 0 \(no training\) needs a pretrained model"),
])
def test_config_errors_name_the_key(name, overrides, match):
    with pytest.raises(ConfigError, match=match):
        methods.get(name).make_config(overrides)


def test_pretrained_without_training_is_a_valid_config():
    assert methods.get("cellpose").make_config({"pretrained": "cyto3", "epochs": 0}).epochs == 0
    assert methods.get("stardist").make_config({"pretrained": "2D_versatile_fluo", "epochs": 0}).epochs == 0


@pytest.mark.parametrize("name, blocked", [("cellpose", "cellpose"), ("stardist", "tensorflow"),
                                           ("stardist", "stardist")])
def test_missing_package_says_how_to_install(tmp_path, monkeypatch, name, blocked):
    monkeypatch.setitem(sys.modules, blocked, None)  # `import <blocked>` now raises ImportError
    data = make_dataset(tmp_path / "data", n=1, size=32)
    ds = CanonicalDataset(data, "train")
    m = methods.get(name)
    with pytest.raises(ConfigError, match=r"install the peers extra: pip install -e \.\[peers\]"):
        m.train(ds, ds, m.make_config({}), tmp_path / "run", "cpu")
    with pytest.raises(ConfigError, match=r"pip install -e \.\[peers\]"):
        next(m.predict({}, iter([ds[0].image]), m.make_config({}), "cpu"))


def test_cellpose_instances_score_mean_sigmoid_cellprob():
    from objguided_methods.cellpose import instances_from

    masks = np.zeros((10, 12), np.int32)
    masks[1:4, 1:4] = 1
    masks[6:9, 6:10] = 3  # ids need not be consecutive
    cellprob = np.full(masks.shape, -8.0, np.float32)
    cellprob[1:4, 1:4] = 2.0
    cellprob[6:9, 6:8], cellprob[6:9, 8:10] = 0.0, 4.0
    inst = instances_from(masks, cellprob)
    assert len(inst) == 2 and all(isinstance(i, Instance) and i.mask.dtype == bool for i in inst)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    assert inst[0].score == pytest.approx(sig(2.0)) and inst[0].mask.sum() == 9
    assert inst[1].score == pytest.approx((sig(0.0) + sig(4.0)) / 2) and inst[1].mask.sum() == 12
    assert instances_from(np.zeros((4, 4), np.int32), np.zeros((4, 4))) == []


def test_stardist_instances_take_the_polygon_probability():
    from objguided_methods.stardist import instances_from

    labels = np.zeros((10, 10), np.int32)
    labels[0:3, 0:3] = 1
    labels[5:9, 5:9] = 3  # polygon 2 was drawn over entirely: absent
    inst = instances_from(labels, np.array([0.6, 0.7, 0.9]))
    assert [round(i.score, 3) for i in inst] == [0.6, 0.9] and [int(i.mask.sum()) for i in inst] == [9, 16]
    assert instances_from(np.zeros((3, 3), np.int32), np.zeros(0)) == []


def test_stardist_augmenter_moves_image_and_labels_together():
    from objguided_methods.stardist import augmenter

    np.random.seed(3)
    y = np.arange(1, 16 * 12 + 1, dtype=np.int32).reshape(16, 12)  # every pixel its own label
    x = y.astype(np.float32)
    shapes = set()
    for _ in range(12):
        xa, ya = augmenter(x, y)
        gain = xa / ya  # the same flip/rotation for both: a constant ratio, the intensity gain
        assert np.allclose(gain, gain.flat[0], rtol=1e-5) and 0.8 <= gain.flat[0] <= 1.2
        assert xa.dtype == np.float32 and sorted(ya.ravel()) == sorted(y.ravel())
        shapes.add(xa.shape)
    assert shapes == {(16, 12), (12, 16)}


# ---------------------------------------------------------------------------------------------------
# learning (the peers extra installed)

#: cellpose's learning schedule: 200 steps of 2 crops of 96 px, objects resized to 15 px (2 CPU cores)
CP_LEARN = {"epochs": 100, "batch_size": 2, "learning_rate": 0.01, "diam_mean": 15.0, "bsize": 96,
            "min_train_masks": 1}
#: stardist's: 16 rays, a 2-level U-net of 16 filters, 64 px patches, 200 steps of 4
SD_LEARN = {"n_rays": 16, "grid": 2, "unet_n_depth": 2, "unet_n_filter_base": 16, "patch_size": 64,
            "batch_size": 4, "epochs": 20, "steps_per_epoch": 10, "learning_rate": 3e-3}


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_CELLPOSE, reason=NO_CELLPOSE)
def test_cellpose_learns_to_segment_its_training_images(tmp_path):
    """A short CPU run from scratch clearly beats the untrained network at the same diameter."""
    import torch

    from objguided_methods.cellpose import load_model, make_state, new_model, predict_with

    data = make_dataset(tmp_path / "data")
    ds = CanonicalDataset(data, "train")
    m = methods.get("cellpose")
    cfg = m.make_config(CP_LEARN)
    torch.manual_seed(0)
    np.random.seed(0)
    started = time.perf_counter()
    state = m.train(ds, ds, cfg, tmp_path / "run", "cpu")
    seconds = time.perf_counter() - started
    assert state["init"] == "scratch" and state["epochs"] == 100 and state["package"]["cellpose"].startswith("3.")
    torch.manual_seed(0)
    untrained, init = new_model(cfg, "cpu")
    untrained.diam_labels = state["diam_labels"]
    before_state = make_state(untrained, init)
    before = ap50(data, lambda ims: predict_with(load_model(before_state, "cpu"), ims, cfg, state["diam_labels"]),
                  tmp_path, "before")
    after = ap50(data, lambda ims: m.predict(state, ims, cfg, "cpu"), tmp_path, "after")
    print(f"cellpose learning test: APseg@0.5 untrained {before:.3f} -> trained {after:.3f} after 200 steps "
          f"({seconds:.0f} s training, mean train diameter {state['diam_labels']:.1f} px)")
    assert after >= before + 0.3
    # predictions at the image's own size, scores in (0, 1]
    image = np.random.default_rng(0).integers(0, 255, (37, 53), dtype=np.uint8)
    for inst in m.predict(state, iter([image]), cfg, "cpu"):
        assert all(i.mask.shape == (37, 53) and 0 < i.score <= 1 for i in inst)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_STARDIST, reason=NO_STARDIST)
def test_stardist_learns_to_segment_its_training_images(tmp_path):
    """A short CPU run from scratch clearly beats the untrained network (StarDist's default thresholds)."""
    from objguided_methods.stardist import load_model, make_state, new_model, predict_with

    data = make_dataset(tmp_path / "data")
    ds = CanonicalDataset(data, "train")
    m = methods.get("stardist")
    cfg = m.make_config(SD_LEARN)
    np.random.seed(0)
    started = time.perf_counter()
    state = m.train(ds, ds, cfg, tmp_path / "run", "cpu")
    seconds = time.perf_counter() - started
    assert state["init"] == "scratch" and state["tuning"]["tuned_on"] == "val"
    assert set(state["thresholds"]) == {"prob", "nms"} and "stardist" in state["package"]
    import keras

    keras.utils.set_random_seed(0)
    untrained, init = new_model(cfg)
    before_state = make_state(untrained, init, {"prob": 0.5, "nms": 0.4})
    before = ap50(data, lambda ims: predict_with(load_model(before_state), ims, cfg, before_state["thresholds"]),
                  tmp_path, "before")
    after = ap50(data, lambda ims: m.predict(state, ims, cfg, "cpu"), tmp_path, "after")
    print(f"stardist learning test: APseg@0.5 untrained {before:.3f} -> trained {after:.3f} after 200 steps "
          f"({seconds:.0f} s training + threshold tuning; thresholds {state['thresholds']})")
    assert after >= before + 0.3
    rgb = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    for inst in m.predict(state, iter([rgb]), cfg, "cpu"):
        assert all(i.mask.shape == (37, 53) and 0 < i.score <= 1 for i in inst)


# ---------------------------------------------------------------------------------------------------
# the pretrained option (offline: a model the package wrote, given by path)


@pytest.mark.skipif(not HAVE_CELLPOSE, reason=NO_CELLPOSE)
def test_cellpose_starts_from_a_model_file_and_records_it(tmp_path):
    data = make_dataset(tmp_path / "data", n=2, size=64)
    ds = CanonicalDataset(data, "train")
    m = methods.get("cellpose")
    tiny = {"epochs": 1, "batch_size": 2, "bsize": 64, "diam_mean": 15.0, "min_train_masks": 1}
    first = m.train(ds, ds, m.make_config(tiny), tmp_path / "a", "cpu")
    saved = tmp_path / "a" / "cellpose" / "models" / "cellpose_model"  # what train_seg wrote
    assert saved.is_file() and first["init"] == "scratch"
    cfg = m.make_config({**tiny, "pretrained": str(saved), "epochs": 0})
    state = m.train(ds, ds, cfg, tmp_path / "b", "cpu")
    assert state["init"] == str(saved) and len(state["init_sha256"]) == 64 and state["epochs"] == 0
    assert state["diam_mean"] == pytest.approx(15.0)
    with pytest.raises(ConfigError, match="neither a cellpose built-in model"):
        m.train(ds, ds, m.make_config({"pretrained": str(tmp_path / "missing.pth")}), tmp_path / "c", "cpu")


@pytest.mark.skipif(not HAVE_STARDIST, reason=NO_STARDIST)
def test_stardist_starts_from_a_model_folder_and_records_it(tmp_path):
    data = make_dataset(tmp_path / "data", n=2, size=64)
    ds = CanonicalDataset(data, "train")
    m = methods.get("stardist")
    tiny = {"n_rays": 8, "unet_n_depth": 1, "unet_n_filter_base": 4, "patch_size": 32, "batch_size": 2,
            "epochs": 1, "steps_per_epoch": 2, "tune_thresholds": False}
    np.random.seed(0)
    first = m.train(ds, ds, m.make_config(tiny), tmp_path / "a", "cpu")
    folder = tmp_path / "a" / "stardist"  # StarDist's own files: config.json, weights_*.h5
    assert (folder / "config.json").is_file() and first["init"] == "scratch"
    state = m.train(ds, ds, m.make_config({**tiny, "pretrained": str(folder), "epochs": 1}), tmp_path / "b", "cpu")
    assert state["init"] == str(folder) and state["config"]["n_rays"] == 8 and state["epochs"] == 1
    assert (tmp_path / "b" / "stardist" / "config.json").is_file()  # fine-tuned in its own run folder
    kept = m.train(ds, ds, m.make_config({**tiny, "pretrained": str(folder), "epochs": 0}), tmp_path / "c", "cpu")
    assert kept["epochs"] == 0 and kept["thresholds"] == {"prob": 0.5, "nms": 0.4}
    with pytest.raises(ConfigError, match="methods.stardist.pretrained"):
        m.train(ds, ds, m.make_config({**tiny, "pretrained": "no_such_model"}), tmp_path / "d", "cpu")
