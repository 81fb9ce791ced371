"""The training steps every learned method shares (objguided_methods.base): samples drawn only from their
seed, the default batch and loss, and the start of ``train`` (config check, then the train split, which may
not be empty) for each method built on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset, write_sample
from objguided.data.synthetic import generate
from objguided.errors import ConfigError
from objguided_methods.base import TrainSamples, cpu_state, read_pairs


class Noisy(TrainSamples):
    """A toy encoding: the image plus noise from the sample's generator, the label count as target."""

    def encode(self, image, labels, rng):
        noisy = image.astype(np.float32) + rng.normal(size=image.shape).astype(np.float32)
        return torch.from_numpy(noisy), {"n": int(labels.max())}


@pytest.fixture(scope="module")
def pairs():
    return [(img, lab) for _, img, lab in generate("nuclei", 3, 48, 5)]


def test_a_sample_depends_on_its_index_and_seed_only(pairs):
    samples = Noisy(pairs, cfg=None)
    assert len(samples) == 3
    a, b = samples[(1, 7)], Noisy(pairs, cfg=None)[(1, 7)]
    assert torch.equal(a[0], b[0]) and a[1] == b[1] == {"n": int(pairs[1][1].max())}
    assert not torch.equal(samples[(1, 8)][0], a[0])  # another seed, another draw
    images, targets = samples.collate([samples[(0, 1)], samples[(2, 1)]])
    assert images.shape == (2, 48, 48, 3) and targets == [samples[(0, 1)][1], samples[(2, 1)][1]]


def test_default_loss_is_the_networks_own():
    class Net(torch.nn.Module):
        def loss(self, images, targets):
            return {"total": images.sum() * len(targets)}

    assert float(TrainSamples.loss(Net(), (torch.ones(2, 3), [0, 1]))["total"]) == 12.0


def test_cpu_state_is_detached():
    net = torch.nn.Linear(2, 1)
    state = cpu_state(net)
    assert set(state) == {"weight", "bias"} and not any(v.requires_grad for v in state.values())


@pytest.fixture
def empty_train(tmp_path):
    root = tmp_path / "data"
    for image_id, img, lab in generate("nuclei", 2, 48, 0):
        write_sample(root, image_id, img, lab)
    split = root / "split.json"
    split.write_text(json.dumps({"train": [], "val": ["nuclei_0000"], "test": ["nuclei_0001"],
                                 "source": "seeded", "seed": 0}))
    return CanonicalDataset(root, "train", split)


def test_read_pairs_names_the_method_and_the_folder(empty_train):
    with pytest.raises(ConfigError, match=rf"methods\.toy: the train split of {empty_train.root} is empty"):
        read_pairs("toy", empty_train)


@pytest.mark.parametrize("name", ["objguided", "keypoint_graph", "mask_rcnn", "pointrend", "dcan",
                                  "cosine_embedding"])
def test_every_learned_method_refuses_an_empty_train_split(name, empty_train, tmp_path):
    method = methods.get(name)
    cfg = method.make_config({})
    with pytest.raises(ConfigError, match=rf"methods\.{name}: the train split of .* is empty"):
        method.train(empty_train, empty_train, cfg, tmp_path / "run", "cpu")
    assert not (tmp_path / "run").exists()  # refused before any training state is written
