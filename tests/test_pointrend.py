"""The registered ``pointrend`` method: config, point sampling (k, beta, coverage), adaptive subdivision,
the ROI heads (training losses, the 400-object cap), prediction and (slow) learning."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset, write_sample
from objguided.data.synthetic import generate
from objguided.errors import ConfigError
from objguided_methods._pointrend_net import (
    build_model,
    point_sample,
    sample_image_map,
    sample_training_points,
    subdivision_inference,
    subdivision_step,
    uncertainty,
)
from objguided_methods.base import Instance

TINY = {"backbone": "resnet18", "pretrained": "none", "num_workers": 0, "input_size": 128, "fpn_channels": 32,
        "box_head_dim": 64, "coarse_fc_dim": 64, "point_fc_dim": 32, "box_batch_size_per_image": 64,
        "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 300, "smallest_anchor": 16}


def method():
    return methods.get("pointrend")


def make_dataset(root, n=4, size=96, seed=0, kind="nuclei", **params):
    import json

    ids = []
    for image_id, image, labels in generate(kind, n, size, seed, **params):
        write_sample(root, image_id, image, labels)
        ids.append(image_id)
    (root / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "seeded",
                                                 "seed": seed}))
    return root


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


def test_registered_with_detectron2s_defaults():
    m = method()
    assert m.name == "pointrend" and m.uses_gpu
    cfg = m.make_config({})
    assert (cfg.coarse_pool, cfg.coarse_side, cfg.coarse_fc_dim) == (14, 7, 1024)
    assert (cfg.point_fc_dim, cfg.point_num_fc, cfg.coarse_pred_each_layer) == (256, 3, True)
    assert (cfg.train_num_points, cfg.oversample_ratio, cfg.importance_sample_ratio) == (196, 3.0, 0.75)
    assert (cfg.subdivision_steps, cfg.subdivision_num_points, cfg.train_on_pred_boxes) == (5, 784, True)
    assert cfg.box_detections_per_img >= 500 and (cfg.backbone, cfg.input_size) == ("resnet50", 512)


@pytest.mark.parametrize("overrides, match", [
    ({"num_points": 196}, "unknown key 'num_points'"),
    ({"subdivision_steps": 5.0}, r"subdivision_steps: expected an integer >= 0, got 5\.0"),
    ({"coarse_pred_each_layer": "yes"}, r"coarse_pred_each_layer: expected true or false, got 'yes'"),
    ({"importance_sample_ratio": 1.5}, r"importance_sample_ratio: expected a number in \[0, 1\]"),
    ({"oversample_ratio": 0.5}, r"oversample_ratio: expected a number >= 1"),
    ({"coarse_pool": 7}, r"coarse_pool: expected an integer >= 2 and a multiple of 2, got 7"),
    ({"backbone": "resnet152"}, r"backbone: expected one of"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        method().make_config(overrides)


# ---------------------------------------------------------------------------------------------------
# point sampling


def _centre_uncertain(r: int = 8) -> torch.Tensor:
    """Coarse logits [r, 1, 7, 7]: confident (+10) everywhere but the centre 3x3 cells (0: uncertain)."""
    logits = torch.full((r, 1, 7, 7), 10.0)
    logits[:, :, 2:5, 2:5] = 0.0
    return logits


def test_training_points_counts_and_importance_sampling():
    """k = 3, beta = 0.75, N = 196: the 147 most uncertain of 588 random points, then 49 random ones."""
    coarse = _centre_uncertain()
    g = torch.Generator().manual_seed(3)
    points = sample_training_points(coarse, 196, 3.0, 0.75, generator=g)
    assert points.shape == (8, 196, 2) and float(points.min()) >= 0 and float(points.max()) < 1
    g = torch.Generator().manual_seed(3)  # the same draws again: the 588 candidates, then the 49
    candidates = torch.rand(8, 588, 2, generator=g)
    coverage = torch.rand(8, 49, 2, generator=g)
    unc = uncertainty(point_sample(coarse, candidates))[:, 0]
    top = unc.topk(147, dim=1).indices
    for r in range(8):
        chosen = {tuple(p) for p in points[r, :147].tolist()}
        assert chosen == {tuple(p) for p in candidates[r, top[r]].tolist()}
    assert torch.equal(points[:, 147:], coverage)


def test_training_points_are_biased_toward_uncertain_regions():
    """The importance points gather where the coarse logit is near 0: the centre 3x3 cells here, and the
    box border, where bilinear sampling with zero padding (detectron2's ``point_sample``) pulls the logit
    toward 0; the coverage points stay uniform."""
    coarse = _centre_uncertain(r=32)
    points = sample_training_points(coarse, 196, 3.0, 0.75, generator=torch.Generator().manual_seed(0))
    logit = lambda p: point_sample(coarse, p)[:, 0].abs()  # noqa: E731
    centre = lambda p: ((p > 1.5 / 7) & (p < 5.5 / 7)).all(dim=-1).float().mean().item()  # noqa: E731
    area = (4 / 7) ** 2  # 0.33 of the box: uniform points land in the centre square that often
    assert bool((logit(points[:, :147]) < 9.99).all())  # all in the uncertain region (59 % of the box)
    assert centre(points[:, :147]) > 0.7
    assert abs(centre(points[:, 147:]) - area) < 0.06
    assert float(logit(points[:, :147]).mean()) < 0.5 * float(logit(points[:, 147:]).mean())
    # beta = 0 is uniform sampling; beta = 1 has no coverage points
    assert abs(centre(sample_training_points(coarse, 196, 3.0, 0.0)) - area) < 0.06
    only_uncertain = sample_training_points(coarse, 196, 3.0, 1.0)
    assert bool((logit(only_uncertain) < 9.99).all()) and centre(only_uncertain) > 0.5


def test_one_subdivision_step_doubles_the_resolution_and_changes_only_the_selected_points():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 7, 7) * 4
    seen = {}

    def predict(points):
        seen["points"] = points
        return torch.full((points.shape[0], 1, points.shape[1]), 100.0)

    out, idx = subdivision_step(logits, 50, predict)
    up = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
    assert out.shape == (3, 1, 14, 14) and idx.shape == (3, 50)
    changed = (out != up).reshape(3, -1)
    for r in range(3):
        assert set(torch.nonzero(changed[r]).flatten().tolist()) == set(idx[r].tolist())
        assert torch.all(out.reshape(3, -1)[r, idx[r]] == 100.0)
        # the selected cells are the 50 most uncertain of the upsampled logits
        assert set(idx[r].tolist()) == set(uncertainty(up).reshape(3, -1)[r].topk(50).indices.tolist())
    # the points are the selected cells' centres in [0, 1]^2 box coordinates
    p = seen["points"][0, 0]
    assert torch.allclose(p, torch.tensor([(idx[0, 0] % 14 + 0.5) / 14, (idx[0, 0] // 14 + 0.5) / 14]))


def test_subdivision_inference_from_7_to_224_skips_only_redundant_steps():
    """5 steps of 28^2 points from 7x7 give 224x224; skipping the 14x14 step (as detectron2 does) gives the
    same result as running it, because the 28x28 step then re-predicts every cell."""
    torch.manual_seed(0)
    coarse = torch.randn(4, 1, 7, 7) * 3

    def predict(points):  # like the point head: a function of the point (fine features + coarse logit)
        x, y = points[..., 0], points[..., 1]
        return (torch.sin(9 * x) * torch.cos(7 * y) * 3 + point_sample(coarse, points)[:, 0])[:, None]

    fast = subdivision_inference(coarse, 5, 784, predict)
    full = coarse
    for _ in range(5):
        full, _ = subdivision_step(full, 784, predict)
    assert fast.shape == (4, 1, 224, 224)
    assert torch.allclose(fast, full, atol=1e-5)


def test_point_features_follow_roi_align_coordinates():
    """Fine-grained features at an image point equal torchvision's ROIAlign (aligned=False, the box head's
    and the coarse head's convention) of a box centred there, sampled once at its centre."""
    from torchvision.ops import roi_align

    torch.manual_seed(0)
    fmap = torch.randn(5, 32, 40)  # P2 of a 128 x 160 image (stride 4)
    xy = torch.tensor([[37.3, 51.9], [100.0, 20.25], [8.6, 90.1]])
    got = sample_image_map(fmap, xy, 0.25)
    boxes = torch.cat([torch.zeros(3, 1), xy - 8, xy + 8], dim=1)  # > 1 feature px: no min-size quirk
    want = roi_align(fmap[None], boxes, (1, 1), spatial_scale=0.25, sampling_ratio=1, aligned=False)[:, :, 0, 0]
    assert torch.allclose(got.T, want, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# the ROI heads


def _features(c: int, size: int = 512, batch: int = 1):
    feats = {k: torch.randn(batch, c, size // s, size // s) for k, s in (("0", 4), ("1", 8), ("2", 16), ("3", 32))}
    feats["pool"] = torch.randn(batch, c, size // 64, size // 64)
    return feats


def test_a_400_object_image_keeps_400_detections_with_224_masks():
    torch.manual_seed(0)
    model = build_model(method().make_config({**TINY, "input_size": 512})).eval()
    force_confident_boxes(model.roi_heads)
    proposals = _grid_proposals()
    with torch.inference_mode():
        out, _ = model.roi_heads(_features(TINY["fpn_channels"]), [proposals], [(512, 512)])
    assert len(out[0]["boxes"]) == 400 and out[0]["masks"].shape == (400, 1, 224, 224)
    assert float(out[0]["masks"].min()) >= 0 and float(out[0]["masks"].max()) <= 1


def test_no_detection_gives_empty_masks():
    model = build_model(method().make_config({**TINY, "input_size": 128})).eval()
    with torch.inference_mode():
        out, _ = model.roi_heads(_features(TINY["fpn_channels"], 128), [torch.zeros(0, 4)], [(128, 128)])
    assert out[0]["masks"].shape == (0, 1, 224, 224)


def test_training_losses_and_gradients_reach_both_mask_heads():
    torch.manual_seed(0)
    model = build_model(method().make_config({**TINY, "input_size": 128})).train()
    masks = torch.zeros(3, 128, 128, dtype=torch.uint8)
    masks[0, 10:30, 10:40] = 1
    masks[1, 60:90, 50:70] = 1
    masks[2, 100:120, 100:125] = 1
    from objguided_methods._torchvision_detection import masks_to_targets

    targets = [masks_to_targets(masks.numpy().astype(bool)), masks_to_targets(np.zeros((0, 128, 128), bool))]
    losses = model([torch.rand(3, 128, 128), torch.rand(3, 128, 128)], targets)
    assert {"loss_mask", "loss_mask_point", "loss_classifier", "loss_box_reg"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    heads = model.roi_heads
    assert heads.coarse_head.prediction.weight.grad.abs().sum() > 0
    assert heads.point_head.predictor.weight.grad.abs().sum() > 0


def test_predict_at_the_original_resolution():
    m = method()
    cfg = m.make_config({**TINY, "box_detections_per_img": 20})
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


def test_short_training_writes_checkpoint_and_log(tmp_path):
    data = make_dataset(tmp_path / "data", n=2, size=64)
    m = method()
    cfg = m.make_config({**TINY, "input_size": 64, "max_steps": 2, "batch_size": 2, "lr": 1e-3})
    ds = CanonicalDataset(data, "train")
    torch.manual_seed(0)
    state = m.train(ds, ds, cfg, tmp_path / "run", "cpu")
    assert set(state) == {"model", "frozen_bn", "weights_source"}
    header = (tmp_path / "run" / "losses.csv").read_text().splitlines()[0].split(",")
    assert {"mask", "mask_point", "classifier", "box_reg", "objectness"} <= set(header)


#: the learning test's schedule (tuned on 2 shared CPU cores; see methods/README_box_baselines.md)
LEARN = {"backbone": "resnet18", "pretrained": "none", "num_workers": 0, "input_size": 96, "batch_size": 2,
         "lr": 1e-3, "max_steps": 160, "augment": False, "fpn_channels": 64, "box_head_dim": 256,
         "coarse_fc_dim": 256, "point_fc_dim": 64,
         "box_batch_size_per_image": 64, "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 300,
         "smallest_anchor": 16, "log_every": 10}
#: three 96 px images of 4-5 well-separated nuclei, 10-18 px across
LEARN_DATA = {"n": 3, "size": 96, "seed": 1, "min_radius": 5.0, "max_radius": 9.0, "min_count": 3, "max_count": 6}


@pytest.mark.slow
def test_learns_to_segment_its_training_images(tmp_path):
    """A short CPU run from scratch fits a few synthetic nuclei images (APseg@0.5 >= 0.9)."""
    from objguided.engine.run import predict_run, train_run
    from objguided.metrics.score import score_predictions

    data = make_dataset(tmp_path / "data", **LEARN_DATA)
    started = time.perf_counter()
    train_run("pointrend", "learn", LEARN, data, data / "split.json", 0, tmp_path / "run" / "model.pt", "cpu")
    predict_run(tmp_path / "run" / "model.pt", data, data / "split.json", "train", tmp_path / "pred.json", "cpu")
    metrics = score_predictions(data, tmp_path / "pred.json", split_path=data / "split.json", subset="train",
                                extras=False)
    seconds = time.perf_counter() - started
    ap50 = metrics["ap_seg"][0]
    print(f"pointrend learning test: APseg@0.5 = {ap50:.3f}, APseg = {np.mean(metrics['ap_seg']):.3f} after "
          f"{LEARN['max_steps']} steps, {seconds:.0f} s")
    assert ap50 >= 0.9
