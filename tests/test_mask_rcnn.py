"""The registered ``mask_rcnn`` method (torchvision's Mask R-CNN): config, backbone weights, targets, the
detection cap, pasting at the original resolution, the training path and (slow) learning."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset, write_sample
from objguided.data.synthetic import generate
from objguided.errors import ConfigError
from objguided_methods._torchvision_detection import TrainSamples, build_fpn_backbone, masks_to_targets, paste_masks
from objguided_methods.base import Instance
from objguided_methods.mask_rcnn import build_model

#: a light network for fast tests (no weights: nothing can be downloaded here)
TINY = {"backbone": "resnet18", "pretrained": "none", "num_workers": 0, "input_size": 128, "fpn_channels": 32,
        "box_head_dim": 64, "mask_head_dim": 32, "box_batch_size_per_image": 64, "rpn_pre_nms_top_n_train": 300,
        "rpn_post_nms_top_n_train": 300, "smallest_anchor": 16}


def method():
    return methods.get("mask_rcnn")


def make_dataset(root, n=4, size=96, seed=0, kind="nuclei", **params):
    ids = []
    for image_id, image, labels in generate(kind, n, size, seed, **params):
        write_sample(root, image_id, image, labels)
        ids.append(image_id)
    (root / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "seeded",
                                                 "seed": seed}))
    return root


def test_registered_with_reference_defaults():
    m = method()
    assert m.name == "mask_rcnn" and m.uses_gpu
    cfg = m.make_config({})
    assert (cfg.backbone, cfg.pretrained, cfg.trainable_backbone_layers, cfg.input_size) == \
        ("resnet50", "imagenet", 3, 512)
    assert (cfg.fpn_channels, cfg.box_head_dim, cfg.mask_head_dim, cfg.smallest_anchor) == (256, 1024, 256, 32)
    assert cfg.box_detections_per_img >= 500 and cfg.rpn_post_nms_top_n_test >= cfg.box_detections_per_img
    assert (cfg.optimizer, cfg.epochs, cfg.batch_size, cfg.lr) == ("adam", 100, 8, 1e-4)
    assert cfg.max_steps == 0 and cfg.mask_threshold == 0.5


@pytest.mark.parametrize("overrides, match", [
    ({"bakbone": "resnet18"}, "unknown key 'bakbone'"),
    ({"epochs": "ten"}, r"epochs: expected an integer >= 1, got 'ten'"),
    ({"augment": 1}, r"augment: expected true or false, got 1"),
    ({"backbone": "vgg16"}, r"backbone: expected one of"),
    ({"optimizer": "rmsprop"}, r"optimizer: expected one of"),
    ({"input_size": 500}, r"input_size: expected an integer >= 64 and a multiple of 32"),
    ({"trainable_backbone_layers": 6}, r"trainable_backbone_layers: expected an integer in \[0, 5\], got 6"),
    ({"box_detections_per_img": 2000}, r"rpn_post_nms_top_n_test: 1000 proposals cannot give"),
    ({"mask_threshold": 1.0}, r"mask_threshold: expected a number in \[0, 1\)"),
    ({"max_steps": -1}, r"max_steps: expected an integer >= 0"),
    ({"mask_head_dim": 0}, r"mask_head_dim: expected an integer >= 8"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        method().make_config(overrides)


def test_network_input_size_classes_and_caps():
    cfg = method().make_config({**TINY, "input_size": 512})
    model = build_model(cfg)
    assert model.transform.min_size == (512,) and model.transform.max_size == 512  # not torchvision's 800/1333
    assert model.roi_heads.detections_per_img == 500
    assert model.rpn._post_nms_top_n["testing"] >= 500
    assert model.roi_heads.box_predictor.cls_score.out_features == 2  # background + one class
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2
    sizes = model.rpn.anchor_generator.sizes
    assert sizes == ((16,), (32,), (64,), (128,), (256,))


def _grid_proposals(n_side: int = 20, size: int = 512, box: int = 16) -> torch.Tensor:
    step = size / n_side
    yy, xx = torch.meshgrid(torch.arange(n_side), torch.arange(n_side), indexing="ij")
    x1, y1 = xx.flatten() * step + 2, yy.flatten() * step + 2
    return torch.stack([x1, y1, x1 + box, y1 + box], dim=1).float()


def force_confident_boxes(roi_heads) -> None:
    """Make the box predictor say 'foreground, no box change' for every ROI (a hand-made detector)."""
    with torch.no_grad():
        roi_heads.box_predictor.cls_score.weight.zero_()
        roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 8.0]))
        roi_heads.box_predictor.bbox_pred.weight.zero_()
        roi_heads.box_predictor.bbox_pred.bias.zero_()


def test_a_400_object_image_keeps_400_detections():
    """The ROI heads of an image with 400 separate confident proposals return all 400 (torchvision's
    default cap would keep 100)."""
    torch.manual_seed(0)
    model = build_model(method().make_config({**TINY, "input_size": 512})).eval()
    force_confident_boxes(model.roi_heads)
    c = TINY["fpn_channels"]
    features = {k: torch.randn(1, c, 512 // s, 512 // s) for k, s in (("0", 4), ("1", 8), ("2", 16), ("3", 32))}
    features["pool"] = torch.randn(1, c, 8, 8)
    proposals = _grid_proposals()
    assert len(proposals) == 400
    with torch.inference_mode():
        out, _ = model.roi_heads(features, [proposals], [(512, 512)])
        assert len(out[0]["boxes"]) == 400 and out[0]["masks"].shape == (400, 1, 28, 28)
        model.roi_heads.detections_per_img = 100  # torchvision's default: the cap this test is about
        assert len(model.roi_heads(features, [proposals], [(512, 512)])[0][0]["boxes"]) == 100


def test_offline_imagenet_weights_warn_once_and_train_from_scratch(monkeypatch, caplog):
    import objguided.models.backbone as bb

    def offline(name, pretrained):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(bb, "_load_state", offline)
    cfg = method().make_config({**TINY, "pretrained": "imagenet"})
    with caplog.at_level(logging.WARNING):
        fpn, frozen_bn, source = build_fpn_backbone(cfg)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "training from scratch" in warnings[0].getMessage()
    assert not frozen_bn and source == "random"
    assert isinstance(fpn.body.bn1, torch.nn.BatchNorm2d)  # trainable BN from scratch, as torchvision does
    assert all(p.requires_grad for p in fpn.parameters())  # every layer trains from scratch


def test_local_weights_file_freezes_bn_and_early_layers(tmp_path):
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    cfg = method().make_config({**TINY, "pretrained": str(tmp_path / "r18.pth"), "trainable_backbone_layers": 3})
    fpn, frozen_bn, source = build_fpn_backbone(cfg)
    assert frozen_bn and source == str(tmp_path / "r18.pth")
    assert isinstance(fpn.body.bn1, FrozenBatchNorm2d)
    assert torch.equal(fpn.body.conv1.weight, ref.conv1.weight)
    trains = {n.split(".")[0] for n, p in fpn.body.named_parameters() if p.requires_grad}
    assert trains == {"layer2", "layer3", "layer4"}


def test_targets_from_label_maps():
    labels = np.zeros((20, 30), np.int32)
    labels[2:5, 3:9] = 4
    labels[10:18, 20:21] = 7
    from objguided.data.augment import instance_masks

    t = masks_to_targets(instance_masks(labels))
    assert t["boxes"].tolist() == [[2.5, 1.5, 8.5, 4.5], [19.5, 9.5, 20.5, 17.5]]  # extents: never degenerate
    assert t["labels"].tolist() == [1, 1] and t["masks"].dtype == torch.uint8 and t["masks"].shape == (2, 20, 30)
    empty = masks_to_targets(np.zeros((0, 20, 30), bool))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 20, 30)


def test_training_samples_use_the_papers_augmentation():
    pairs = [(im, lab) for _, im, lab in generate("nuclei", 1, 80, 0)]
    cfg = method().make_config({**TINY, "input_size": 64})
    img, t = TrainSamples(pairs, cfg)[(0, 5)]
    again, _ = TrainSamples(pairs, cfg)[(0, 5)]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and 0 <= float(img.min()) <= float(img.max()) <= 1
    assert torch.equal(img, again)  # a function of the sample seed
    assert t["masks"].shape[1:] == (64, 64) and len(t["boxes"]) == len(t["masks"]) > 0


@pytest.mark.parametrize("side", [28, 224])
def test_paste_inverts_the_mask_targets(side):
    """A ground-truth mask projected on its box (torchvision's ``project_masks_on_boxes``, the training
    target) and pasted back recovers the mask: the paste follows the targets' coordinate convention."""
    from torchvision.models.detection.roi_heads import project_masks_on_boxes

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:60, :70]
    for _ in range(20):
        cy, cx, r = rng.uniform(15, 45), rng.uniform(15, 55), rng.uniform(2, 12)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        t = masks_to_targets(mask[None])
        probs = project_masks_on_boxes(t["masks"], t["boxes"], torch.zeros(1, dtype=torch.int64), side)
        pasted = paste_masks(probs, t["boxes"], 60, 70, 0.5)[0]
        assert np.array_equal(pasted, mask), (cy, cx, r)


def test_predict_at_the_original_resolution(tmp_path):
    m = method()
    cfg = m.make_config({**TINY, "box_score_thresh": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {"model": model.state_dict(), "frozen_bn": False, "weights_source": "random"}
    images = [np.random.default_rng(0).integers(0, 255, (70, 90), dtype=np.uint8),
              np.random.default_rng(1).integers(0, 255, (150, 40, 3), dtype=np.uint8)]
    out = list(m.predict(state, iter(images), cfg, "cpu"))
    assert len(out) == 2
    for image, instances in zip(images, out):
        for inst in instances:
            assert isinstance(inst, Instance) and inst.mask.shape == image.shape[:2] and inst.mask.dtype == bool
            assert inst.mask.any() and 0.0 <= inst.score <= 1.0


def test_short_training_writes_checkpoint_and_log_and_resumes(tmp_path):
    data = make_dataset(tmp_path / "data", n=2, size=64)
    m = method()
    cfg = m.make_config({**TINY, "input_size": 64, "max_steps": 2, "batch_size": 2, "lr": 1e-3})
    ds = CanonicalDataset(data, "train")
    torch.manual_seed(0)
    state = m.train(ds, ds, cfg, tmp_path / "run", "cpu")
    assert set(state) == {"model", "frozen_bn", "weights_source"} and state["frozen_bn"] is False
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    header = (tmp_path / "run" / "losses.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "step", "total"]
    assert {"classifier", "box_reg", "mask", "objectness", "rpn_box_reg"} <= set(header)
    torch.manual_seed(0)
    again = m.train(ds, ds, cfg, tmp_path / "run", "cpu")  # finished: loaded, not retrained
    assert all(torch.equal(state["model"][k], again["model"][k]) for k in state["model"])


#: the learning test's schedule (tuned on 2 shared CPU cores; see methods/README_box_baselines.md)
LEARN = {"backbone": "resnet18", "pretrained": "none", "num_workers": 0, "input_size": 96, "batch_size": 2,
         "lr": 1e-3, "max_steps": 160, "augment": False, "fpn_channels": 64, "box_head_dim": 256, "mask_head_dim": 64,
         "box_batch_size_per_image": 64, "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 300,
         "smallest_anchor": 16, "log_every": 10}


@pytest.mark.slow
def test_learns_to_segment_its_training_images(tmp_path):
    """A short CPU run from scratch fits a few synthetic nuclei images (APseg@0.5 >= 0.9)."""
    from objguided.engine.run import predict_run, train_run
    from objguided.metrics.score import score_predictions

    data = make_dataset(tmp_path / "data", **LEARN_DATA)
    started = time.perf_counter()
    train_run("mask_rcnn", "learn", LEARN, data, data / "split.json", 0, tmp_path / "run" / "model.pt", "cpu")
    predict_run(tmp_path / "run" / "model.pt", data, data / "split.json", "train", tmp_path / "pred.json", "cpu")
    metrics = score_predictions(data, tmp_path / "pred.json", split_path=data / "split.json", subset="train",
                                extras=False)
    seconds = time.perf_counter() - started
    ap50 = metrics["ap_seg"][0]
    print(f"mask_rcnn learning test: APseg@0.5 = {ap50:.3f}, APseg = {np.mean(metrics['ap_seg']):.3f} after "
          f"{LEARN['max_steps']} steps, {seconds:.0f} s")
    assert ap50 >= 0.9


#: three 96 px images of 4-5 well-separated nuclei, 10-18 px across
LEARN_DATA = {"n": 3, "size": 96, "seed": 1, "min_radius": 5.0, "max_radius": 9.0, "min_count": 3, "max_count": 6}
