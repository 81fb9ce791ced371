"""Pins of the objguided method's own data path (issue 17's mutation run over methods/objguided.py and
methods/base.py): every config value reaches the network, the trainer and the inference it names.

The paper's numbers live in ObjGuidedConfig (and are pinned in test_objguided_method); here each field is
set to a value other than its default and must arrive unchanged where it acts: ModelConfig (the
network's k, beta, N divisor, object cap, heads), TrainConfig (Adam at a constant rate, as the authors'
train.py: ``torch.optim.Adam(self.model.parameters(), args.init_lr)``, no schedule) and the inference
(``PostConfig``; the test resize; ``detect``'s score threshold and top-K, the authors' ``--conf_thresh``
and ``--K``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import objguided_methods as methods
from objguided.errors import ConfigError
from objguided.models.postprocess import PostConfig
from objguided_methods.base import TrainSamples as SamplesBase
from objguided_methods.base import crop_or_letterbox, rgb3
from objguided_methods.objguided import build_net, model_config, predict_with, train_config

_MODEL = {"backbone": "resnet34", "pretrained": "/weights/r34.pth", "refine": False, "k": 2.5, "beta": 0.5,
          "points_divisor": 4, "max_objects": 77, "clamp_heatmap": False, "batch_rois": False, "head_width": 48}
_TRAIN = {"epochs": 7, "batch_size": 3, "lr": 3e-3, "weight_decay": 1e-5, "amp": False, "num_workers": 2,
          "checkpoint_every": 5, "checkpoint_min_seconds": 12.5, "max_steps": 99, "log_every": 4,
          "budget_seconds": 60.0, "grad_clip": 2.0}


def _cfg(**overrides):
    return methods.get("objguided").make_config(overrides)


def test_every_network_field_reaches_model_config():
    mcfg = model_config(_cfg(**_MODEL))
    assert {k: getattr(mcfg, k) for k in _MODEL} == _MODEL
    assert model_config(_cfg(**_MODEL), pretrained=None).pretrained is None  # the override wins
    with pytest.raises(ConfigError, match=r"^methods\.objguided: "):  # ModelConfig's own check, prefixed
        model_config(dataclasses.replace(_cfg(), k=1.0, beta=2.0))


def test_every_training_field_reaches_train_config_with_adam_at_a_constant_rate():
    tcfg = train_config(_cfg(**_TRAIN))
    assert {k: getattr(tcfg, k) for k in _TRAIN} == _TRAIN
    assert tcfg.optimizer == "adam" and not tcfg.lr_milestones
    assert train_config(_cfg()).grad_clip is None


def test_beta_above_k_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"where\.beta: expected 0 < beta <= k \(= 2\.0\), got 2\.5"):
        methods.get("objguided").config_check(dataclasses.replace(_cfg(), k=2.0, beta=2.5), "where")
    methods.get("objguided").config_check(dataclasses.replace(_cfg(), k=2.0, beta=2.0), "where")
    with pytest.raises(ConfigError, match=r"^methods\.objguided\.beta: "):
        methods.get("objguided").config_check(dataclasses.replace(_cfg(), k=2.0, beta=2.5))


def test_collate_stacks_images_and_keeps_targets_per_image():
    batch = [(torch.full((3, 4, 4), float(i)), {"id": i}) for i in range(3)]
    images, targets = SamplesBase.collate(batch)
    assert images.shape == (3, 3, 4, 4) and [float(x[0, 0, 0]) for x in images] == [0.0, 1.0, 2.0]
    assert targets == [{"id": 0}, {"id": 1}, {"id": 2}]


def test_rgb3_repeats_gray_and_drops_alpha():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert (rgb3(gray) == gray[..., None]).all() and rgb3(gray).shape == (2, 3, 3)
    rgba = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(rgb3(rgba), rgba[..., :3])


def test_without_augmentation_the_whole_image_is_letterboxed_about_its_centre():
    """augment off: no random draw; a 20 x 40 image (gray or colour) in a 40 x 40 square, resized to 40:
    the image occupies rows 10..29, its instances too; at 80 the labels are warped nearest."""
    image = np.full((20, 40, 3), 200, np.uint8)
    labels = np.zeros((20, 40), np.int32)
    labels[0:5, 0:8] = 1
    labels[10:20, 30:40] = 2
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    img, masks = crop_or_letterbox(image, labels, 40, rng, augment=False)
    assert rng.bit_generator.state == state
    assert (img[10:30] == 200).all() and (img[:10] == 0).all() and (img[30:] == 0).all()
    assert masks.shape == (2, 40, 40)
    assert masks[0].sum() == 40 and masks[0][10:15, 0:8].all()
    assert masks[1].sum() == 100 and masks[1][20:30, 30:40].all()
    touching = np.where(np.arange(40) < 20, 1, 3).astype(np.int32)[None].repeat(20, 0)
    _, big = crop_or_letterbox(image[..., 0], touching, 80, rng, augment=False)
    assert len(big) == 2  # nearest: no in-between label (2) where ids 1 and 3 meet
    assert big[0][22:58, 2:38].all() and big[1][22:58, 42:78].all()


@pytest.mark.parametrize("faithful_to", ["paper", "code"])
def test_training_sample_is_the_papers_crop_of_the_rgb_or_bgr_image_and_its_targets(faithful_to):
    """TrainSamples: the config's crop scales drawn from the sample's generator (augment.augment), the
    crop stretched to the input (already S x S), RGB on the paper path and BGR on the code path (the
    authors read OpenCV's BGR), then build_targets of the crop's masks."""
    from objguided.data.augment import augment
    from objguided.models.preprocess import prepare
    from objguided.models.targets import build_targets
    from objguided_methods.objguided import TrainSamples

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    image[..., 0] = 255
    labels = np.zeros((80, 96), np.int32)
    labels[30:50, 30:60] = 1
    cfg = _cfg(input_size=32, crop_scales=[0.7], faithful_to=faithful_to)
    x, t = TrainSamples([(image, labels)], cfg, model_config(cfg))[(0, 9)]
    crop, masks = augment(image, labels, 32, np.random.default_rng(9), scales=[0.7])
    want, _ = prepare(crop, 32, "stretch", bgr=faithful_to == "code")
    assert torch.equal(x, want)
    red = 2 if faithful_to == "code" else 0
    assert float(x[red].mean()) > float(x[2 - red].mean())
    for k, v in build_targets(masks, model_config(cfg)).items():
        np.testing.assert_array_equal(t[k].numpy(), v)


def _tiny_net(cfg):
    from objguided.models.network import ObjGuidedNet

    torch.manual_seed(0)
    return ObjGuidedNet(model_config(cfg, pretrained=None)).eval()


@pytest.mark.parametrize("faithful_to", ["paper", "code"])
def test_predict_passes_the_configs_inference_values(faithful_to, monkeypatch):
    """predict_with: prepare with the config's test resize and the code path's BGR, detect with its score
    threshold and top-K, to_instances with its PostConfig; masks at the image's size (an untrained tiny
    network; its calls are recorded on their way through)."""
    import objguided.models.postprocess as post

    cfg = _cfg(backbone="resnet18", pretrained=None, head_width=16, input_size=32, faithful_to=faithful_to,
               test_resize="letterbox", score_threshold=0.0, top_k=7, threshold=0.4, mask_nms_iou=0.3)
    net = _tiny_net(cfg)
    calls, seen = [], []
    real_detect, real_post = net.detect, post.to_instances
    monkeypatch.setattr(net, "detect", lambda x, **kw: calls.append((x.clone(), kw)) or real_detect(x, **kw))
    monkeypatch.setattr(post, "to_instances", lambda d, f, p: seen.append((d, f, p)) or real_post(d, f, p))
    image = np.zeros((16, 32, 3), np.uint8)
    image[..., 0] = 255  # red
    (found,) = list(predict_with(net, [image], cfg, "cpu"))
    (x, kw), = calls
    assert kw == {"score_threshold": 0.0, "top_k": 7} and x.shape == (1, 3, 32, 32)
    red = 2 if faithful_to == "code" else 0
    assert float(x[0, red, 16, 16]) == pytest.approx(0.5) and float(x[0, 2 - red, 16, 16]) == pytest.approx(-0.5)
    assert float(x[0, red, 2, 16]) == -0.5  # the letterbox band
    (det, frame, pc), = seen
    assert (frame.pad_y, frame.orig_h, frame.orig_w) == (8.0, 16, 32)
    assert pc == PostConfig(faithful_to=faithful_to, threshold=0.4, mask_nms_iou=0.3)
    assert len(det["scores"]) <= 7
    assert len(found) == len(real_post(det, frame, pc))
    for inst in found:
        assert inst.mask.shape == (16, 32) and inst.mask.dtype == bool
        assert (inst.soft_area is None) == (faithful_to == "paper")


def test_build_net_loads_the_states_weights_without_downloading():
    cfg = _cfg(backbone="resnet18", head_width=16, input_size=64)
    net = _tiny_net(cfg)
    mcfg = net.cfg
    state = {"model": net.state_dict(), "model_config": {**dataclasses.asdict(mcfg), "pretrained": "imagenet"}}
    built = build_net(state, "cpu")
    assert not built.training
    assert all(torch.equal(built.state_dict()[k], v) for k, v in net.state_dict().items())
    for bad in ({}, {"model": {}}, {"model_config": {}}, "nope"):
        with pytest.raises(ConfigError, match="holds no objguided state; re-run training"):
            build_net(bad, "cpu")
