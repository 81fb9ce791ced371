"""The ``cosine_embedding`` baseline: the cosine loss, clustering, scores, config, and learning."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.draw import disk

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset, write_sample
from objguided.data.synthetic import generate
from objguided.errors import ConfigError
from objguided_methods.base import Instance
from objguided_methods.cosine_embedding import (
    build_net,
    cluster,
    cosine_loss,
    instances_from,
    make_loss,
    select_instances,
    tune_post,
)

pytest.importorskip("sklearn.cluster", reason="cosine_embedding clusters with scikit-learn's HDBSCAN")

TINY = {"levels": 3, "filters": 4, "embedding_dim": 8, "input_size": 32, "batch_size": 2, "max_steps": 2,
        "progress": False, "num_workers": 0}


def method():
    return methods.get("cosine_embedding")


def make_dataset(root, n=4, size=96, seed=1, kind="nuclei"):
    """A canonical folder, every image in train (the tests pass the train set as val too)."""
    ids = []
    for image_id, image, labels in generate(kind, n, size, seed):
        write_sample(root, image_id, image, labels)
        ids.append(image_id)
    (root / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "seeded",
                                                 "seed": seed}))
    return root


def two_discs(size=48, radius=9, touching=True):
    labels = np.zeros((size, size), np.int32)
    gap = radius - 1 if touching else radius + 4
    for k, c in enumerate((size // 2 - gap, size // 2 + gap), start=1):
        rr, cc = disk((size // 2, c), radius, shape=labels.shape)
        labels[rr, cc] = k
    return labels


def perfect_embeddings(labels, dim=8):
    """Unit vectors: one orthogonal direction per label (background included)."""
    emb = np.zeros((*labels.shape, dim), np.float32)
    for k in range(int(labels.max()) + 1):
        emb[labels == k, k] = 1.0
    return emb


# ---------------------------------------------------------------------------------------------------
# loss


def test_loss_is_zero_for_perfect_embeddings_and_larger_for_mixed_ones():
    labels = two_discs()
    lab = torch.from_numpy(select_instances(labels, 32, None))
    perfect = torch.from_numpy(perfect_embeddings(labels)).permute(2, 0, 1)
    inst, back = cosine_loss(perfect, lab, radius=20.0)
    assert float(inst) < 1e-6 and float(back) < 1e-6
    # the two instances share one direction: their neighbour terms are ~1 each
    mixed = perfect.clone()
    mixed[:, labels == 2] = perfect[:, labels == 1][:, :1]
    inst_m, back_m = cosine_loss(mixed, lab, radius=20.0)
    assert float(inst_m) > 0.9 and float(back_m) < 1e-6
    # random embeddings: both terms well above 0
    rnd = F.normalize(torch.randn_like(perfect), dim=0)
    inst_r, back_r = cosine_loss(rnd, lab, radius=20.0)
    assert float(inst_r) > 0.5 and float(back_r) > 0.5
    # neighbours are limited to the radius around the centre of mass: far apart, no neighbour term
    inst_far, _ = cosine_loss(mixed, lab, radius=3.0)
    assert float(inst_far) < 1e-6


def test_instance_sampling_keeps_the_others_as_foreground():
    labels = np.arange(64, dtype=np.int32).reshape(8, 8)  # 63 instances + background pixel
    sel = select_instances(labels, 32, np.random.default_rng(0))
    assert sel.max() == 32 and (sel == -1).sum() == 31 and (sel == 0).sum() == 1
    assert sorted(np.unique(sel[sel > 0]).tolist()) == list(range(1, 33))


def test_loss_on_both_stages_and_gradients():
    cfg = method().make_config({**TINY})
    net = build_net(cfg.levels, cfg.filters, cfg.embedding_dim)
    labels = torch.from_numpy(select_instances(two_discs(32, 6), 32, None))[None]
    terms = make_loss(cfg)(net, (torch.randn(1, 3, 32, 32), {"labels": labels}))
    assert {"total", "stage1", "stage2"} <= set(terms) and torch.isfinite(terms["total"])
    terms["total"].backward()
    assert net.stage1.down[0][0].weight.grad is not None
    e1, e2 = net(torch.randn(2, 3, 32, 48))
    assert e1.shape == e2.shape == (2, 8, 32, 48)
    assert torch.allclose(e2.norm(dim=1), torch.ones(2, 32, 48), atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# clustering


def test_clustering_separates_two_embedding_clouds():
    labels = two_discs(touching=True)
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)
    emb = centres[labels] + 0.05 * rng.normal(size=(*labels.shape, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    out = cluster(emb, background_cos2=0.5, min_cluster_size=30, min_samples=10, coord_weight=0.01, min_size=30)
    assert out.max() == 2
    for k in (1, 2):
        truth = np.bincount(labels[out == k]).argmax()
        assert truth > 0
        iou = np.logical_and(out == k, labels == truth).sum() / np.logical_or(out == k, labels == truth).sum()
        assert iou > 0.95
    inst = instances_from(out, emb)
    assert len(inst) == 2 and all(isinstance(i, Instance) and 0.9 < i.score <= 1.0 for i in inst)


def test_clusters_split_into_connected_components_and_small_ones_dropped():
    labels = np.zeros((40, 90), np.int32)
    for k, c in enumerate((15, 45, 75), start=1):
        rr, cc = disk((20, c), 9, shape=labels.shape)
        labels[rr, cc] = k
    direction = np.array([0, 1, 2, 1])  # discs 1 and 3 share a direction: one cluster, two components
    emb = np.eye(8, dtype=np.float32)[direction[labels]]
    emb[1:3, 1:3] = np.eye(8, dtype=np.float32)[1]  # a 4-px speck of that direction, far away
    out = cluster(emb, min_cluster_size=20, min_samples=5, coord_weight=0.0, min_size=10)
    assert out.max() == 3 and out[1, 1] == 0
    assert len({int(out[20, c]) for c in (15, 45, 75)}) == 3


def test_subsampled_clustering_assigns_every_pixel():
    labels = two_discs(touching=True)
    emb = perfect_embeddings(labels)
    full = cluster(emb, min_cluster_size=30, min_samples=10, min_size=30)
    sub = cluster(emb, min_cluster_size=30, min_samples=10, min_size=30, max_points=200)
    assert full.max() == sub.max() == 2
    assert np.array_equal(full > 0, sub > 0)


# ---------------------------------------------------------------------------------------------------
# config and the training path


def test_defaults_are_the_authors():
    cfg = method().make_config({})
    assert (cfg.levels, cfg.filters, cfg.embedding_dim, cfg.max_instances, cfg.neighbour_factor) == (7, 64, 16, 32, 0.2)
    assert (cfg.background_cos2, cfg.min_cluster_size, cfg.min_samples, cfg.coord_weight, cfg.min_size) == \
        (0.5, 50, 50, 0.01, 50)
    assert method().uses_gpu


@pytest.mark.parametrize("overrides, match", [
    ({"level": 4}, "unknown key 'level'"),
    ({"filters": 1.5}, r"params\.filters: expected an integer >= 1, got 1\.5"),
    ({"levels": 0}, r"levels: expected an integer >= 1"),
    ({"levels": 4, "input_size": 100}, r"input_size: expected a multiple of 8"),
    ({"input_size": 96}, r"input_size: expected a multiple of 64"),
    ({"background_cos2": 0.0}, r"background_cos2: expected a number in \(0, 1\]"),
    ({"min_cluster_sizes": [1]}, r"min_cluster_sizes\[0\]: expected an integer >= 2, got 1"),
    ({"coord_weights": "0.01"}, r"coord_weights: expected list|coord_weights: expected a non-empty list"),
    ({"neighbour_factor": -1.0}, r"neighbour_factor: expected a number > 0"),
    ({"optimizer": "nadam_plus"}, r"optimizer: expected one of"),
    ({"lr_milestones": [0]}, r"lr_milestones\[0\]: expected an integer >= 1, got 0"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        method().make_config(overrides)


def test_short_training_predicts_at_the_original_size(tmp_path):
    data = make_dataset(tmp_path / "data", n=2, size=40)
    ds = CanonicalDataset(data, "train")
    m = method()
    cfg = m.make_config({**TINY, "min_cluster_sizes": [5], "min_samples_values": [5], "min_sizes": [5],
                         "min_cluster_size": 5, "min_samples": 5, "min_size": 5})
    torch.manual_seed(0)
    state = m.train(ds, ds, cfg, tmp_path / "run", "cpu")
    assert set(state["post"]) == {"background_cos2", "min_cluster_size", "min_samples", "coord_weight", "min_size"}
    assert (tmp_path / "run" / "cosine_embedding_tuning.json").is_file()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (37, 53), dtype=np.uint8), rng.integers(0, 255, (20, 70, 3), dtype=np.uint8)]
    for image, inst in zip(images, m.predict(state, iter(images), cfg, "cpu")):
        assert all(i.mask.shape == image.shape[:2] and 0 < i.score <= 1 for i in inst)


# ---------------------------------------------------------------------------------------------------
# learning


#: the learning test's schedule (2 shared CPU cores; see methods/README_cosine_embedding.md)
LEARN = {"levels": 4, "filters": 16, "input_size": 64, "batch_size": 4, "lr": 2e-3, "max_steps": 200,
         "progress": False, "log_every": 20, "max_tune_images": 0, "min_cluster_sizes": [10, 20],
         "min_samples_values": [5, 10], "min_sizes": [10, 20]}


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
    untrained = build_net(cfg.levels, cfg.filters, cfg.embedding_dim).eval()
    post, _ = tune_post(untrained, ds, cfg, "cpu")
    net_spec = {"levels": cfg.levels, "filters": cfg.filters, "embedding_dim": cfg.embedding_dim}
    before = ap50(data, {"model": untrained.state_dict(), "net": net_spec, "post": post}, cfg, tmp_path, "before")
    started = time.perf_counter()
    torch.manual_seed(0)
    state = m.train(ds, ds, cfg, tmp_path / "run", "cpu")
    after = ap50(data, state, cfg, tmp_path, "after")
    seconds = time.perf_counter() - started
    print(f"cosine_embedding learning test: APseg@0.5 untrained {before:.3f} -> trained {after:.3f} after "
          f"{cfg.max_steps} steps, {seconds:.0f} s (train + tune + predict)")
    assert after >= before + 0.3
