"""The ``keypoint_graph`` baseline: targets, decoding (voting, grouping, box rules, NMS), the lr decay hook,
prediction at the original size, and a short CPU learning run."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import objguided_methods as methods
from objguided.errors import ConfigError
from objguided_methods._keypoint_graph_core import (
    BL,
    BR,
    CC,
    DIR_INDEX,
    TL,
    TR,
    crop_bounds,
    decode_scale,
    find_peaks,
    group_box,
    group_keypoints,
    keep_group,
    keypoint_targets,
    label_boxes,
    nms,
    scale_keypoints,
    smooth_votes,
    vote_maps,
)
from objguided_methods._keypoint_graph_net import SCALES, EpochDecay, KeypointGraphNet
from objguided_methods.base import Instance

TINY = {"backbone": "resnet18", "pretrained": None, "num_workers": 0, "input_size": 64, "head_kernel": 3,
        "head_width": 16}


def method():
    return methods.get("keypoint_graph")


def squares(size=128):
    """Well-separated squares/rectangles; the last one (5x5) is too small for keypoints at any scale."""
    lab = np.zeros((size, size), np.int32)
    lab[10:30, 12:40] = 1  # 28 x 20
    lab[60:100, 50:70] = 2  # 20 x 40
    lab[20:35, 80:120] = 3  # 40 x 15
    lab[110:115, 5:10] = 4  # 5 x 5
    return lab


# ---------------------------------------------------------------------------------------------------
# config


def test_registered_with_the_codes_defaults():
    m = method()
    assert m.name == "keypoint_graph" and m.uses_gpu
    cfg = m.make_config({})
    assert (cfg.backbone, cfg.pretrained, cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_decay, cfg.input_size) == \
        ("resnet50", "imagenet", 100, 2, 1e-4, 0.96, 512)
    assert (cfg.radius, cfg.min_extent, cfg.sigma, cfg.peak_threshold, cfg.match_radius, cfg.seed_exclusion,
            cfg.nms_iou, cfg.mask_threshold, cfg.head_kernel) == (5.0, 11, 2.0, 0.004, 6.0, 10.0, 0.5, 0.5, 7)


@pytest.mark.parametrize("overrides, match", [
    ({"bakbone": "resnet18"}, "unknown key 'bakbone'"),
    ({"backbone": "vgg16"}, "backbone: expected one of"),
    ({"input_size": 100}, "input_size: expected an integer >= 32 and a multiple of 16, got 100"),
    ({"head_kernel": 4}, "head_kernel: expected an odd integer"),
    ({"head_width": 0}, "head_width: expected an integer >= 1 or null, got 0"),
    ({"lr_decay": 1.5}, r"lr_decay: expected a number in \(0, 1\]"),
    ({"max_steps": 0}, "max_steps: expected an integer >= 1 or null, got 0"),
    ({"mask_threshold": 1.0}, "mask_threshold"),
    ({"pretrained": ""}, "pretrained"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        method().make_config(overrides)


# ---------------------------------------------------------------------------------------------------
# targets


def test_small_objects_get_no_keypoints():
    lab = np.zeros((64, 64), np.int32)
    lab[2:14, 2:14] = 1  # 12 px: x2 - x1 = 11, not > 11
    lab[30:43, 30:43] = 2  # 13 px: x2 - x1 = 12
    kps = scale_keypoints(lab, 1, 11)
    assert kps.shape == (1, 5, 2)
    np.testing.assert_array_equal(kps[0], [[30, 30], [42, 30], [30, 42], [42, 42], [36, 36]])
    assert scale_keypoints(lab, 2, 11).shape == (0, 5, 2)  # 7 px at /2


def test_keypoint_targets_discs_and_offsets():
    kps = scale_keypoints(squares(), 1, 11)
    heat, short, mid = keypoint_targets(kps, 128, 128, 5.0)
    assert heat.shape == (5, 128, 128) and short.shape == (10, 128, 128) and mid.shape == (40, 128, 128)
    # disc of radius 5 around an integer corner: 81 pixels, fully inside the image
    assert heat[TL].sum() == 3 * 81
    ys, xs = np.nonzero(heat[TL])
    tx, ty = xs + short[2 * TL, ys, xs], ys + short[2 * TL + 1, ys, xs]
    targets = {tuple(p) for p in kps[:, TL]}
    assert all((x, y) in targets for x, y in zip(tx, ty))
    # mid offset TL -> BR at object 1's top-left corner (12, 10) points to its bottom-right (39, 29)
    e = DIR_INDEX[(TL, BR)]
    assert (mid[2 * e, 10, 12], mid[2 * e + 1, 10, 12]) == (27, 19)
    assert np.all(short[heat.repeat(2, 0) == 0] == 0)


# ---------------------------------------------------------------------------------------------------
# decoding


def perfect_maps(lab, scale):
    kps = scale_keypoints(lab, scale, 11)
    n = lab.shape[0] // scale
    return keypoint_targets(kps, n, n, 5.0)


def test_grouping_recovers_the_boxes_of_well_separated_squares():
    lab = squares()
    _, gt = label_boxes(lab)
    boxes, scores = decode_scale(*perfect_maps(lab, 1))
    assert len(boxes) == 3  # the 5x5 square has no keypoints
    order = np.lexsort((boxes[:, 1], boxes[:, 0]))
    np.testing.assert_allclose(boxes[order], gt[:3][np.lexsort((gt[:3, 1], gt[:3, 0]))])
    assert np.all((scores > 0.004) & (scores < 1))


def test_every_scale_decodes_and_merges_by_nms():
    lab = np.zeros((256, 256), np.int32)
    lab[20:120, 30:110] = 1  # 80 x 100: keypoints at /1, /2, /4 (and not /8: 10 x 12 px)
    lab[150:200, 140:230] = 2  # 90 x 50: /1, /2 (at /4 its rows 38..49 span 11 px: no)
    found = {}
    all_boxes, all_scores = [], []
    for s in SCALES:
        b, sc = decode_scale(*perfect_maps(lab, s))
        found[s] = len(b)
        all_boxes.append(b * s)
        all_scores.append(sc)
    assert found == {1: 2, 2: 2, 4: 1, 8: 0}
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    keep = nms(boxes, scores, 0.5)
    assert len(keep) == 2
    _, gt = label_boxes(lab)
    for k in keep:  # the kept box of each object is within (scale - 1) px of its extent
        iou = [(min(boxes[k, 2], g[2]) - max(boxes[k, 0], g[0])) * (min(boxes[k, 3], g[3]) - max(boxes[k, 1], g[1]))
               / ((g[2] - g[0]) * (g[3] - g[1])) for g in gt]
        assert max(iou) > 0.9


def test_nms_keeps_the_higher_score_and_boxes_at_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 5], [50, 50, 60, 60]], float)
    scores = np.array([0.2, 0.3, 0.1, 0.05])
    # IoU(1, 0) = 0.9 -> suppressed; IoU(2, 1) = 50/90 > 0.5 -> suppressed; IoU(2, 0) = 0.5 not > 0.5
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]
    assert nms(boxes[[0, 2]], scores[[0, 2]], 0.5).tolist() == [0, 1]


def g_of(points):
    g = np.zeros((5, 4))
    for t, (x, y, c) in points.items():
        g[t] = (x, y, c, 1)
    return g


def test_box_rules_with_missing_corners():
    # three corners (top-right missing)
    g = g_of({TL: (10, 20, 0.1), BL: (11, 40, 0.2), BR: (30, 41, 0.3)})
    box, score = group_box(g)
    np.testing.assert_allclose(box, [10, 20, 30, 41])
    assert score == pytest.approx(0.2)
    # two diagonal corners
    box, _ = group_box(g_of({TR: (30, 20, 0.1), BL: (10, 40, 0.1)}))
    np.testing.assert_allclose(box, [10, 20, 30, 40])
    # two adjacent corners + centre: mirrored through the centre
    box, _ = group_box(g_of({TL: (10, 20, 0.1), TR: (30, 20, 0.1), CC: (20, 28, 0.1)}))
    np.testing.assert_allclose(box, [10, 20, 30, 36])
    box, _ = group_box(g_of({TR: (30, 20, 0.1), BR: (30, 40, 0.1), CC: (24, 30, 0.1)}))
    np.testing.assert_allclose(box, [18, 20, 30, 40])
    box, _ = group_box(g_of({BL: (10, 40, 0.1), BR: (30, 40, 0.1), CC: (20, 33, 0.1)}))
    np.testing.assert_allclose(box, [10, 26, 30, 40])
    box, _ = group_box(g_of({TL: (10, 20, 0.1), BL: (10, 40, 0.1), CC: (16, 30, 0.1)}))
    np.testing.assert_allclose(box, [10, 20, 22, 40])
    # two adjacent corners alone: dropped; a corner and the centre: dropped
    assert not keep_group(g_of({TL: (10, 20, 0.1), TR: (30, 20, 0.1)}))
    assert not keep_group(g_of({TL: (10, 20, 0.1), CC: (20, 30, 0.1)}))
    assert keep_group(g_of({TL: (10, 20, 0.1), BR: (30, 40, 0.1)}))


def test_decoding_with_a_missing_corner_keeps_the_box():
    lab = squares()
    heat, short, mid = perfect_maps(lab, 1)
    heat[TR] = 0  # no top-right keypoints at all
    boxes, _ = decode_scale(heat, short, mid)
    _, gt = label_boxes(lab)
    assert len(boxes) == 3
    assert {tuple(b) for b in boxes} == {tuple(g) for g in gt[:3]}


def test_star_grouping_takes_the_nearest_unused_keypoint_and_discards_near_seeds():
    mid = np.zeros((40, 64, 64))
    e = DIR_INDEX[(TL, BR)]
    mid[2 * e, 5, 5], mid[2 * e + 1, 5, 5] = 20, 20  # TL at (5, 5) predicts BR at (25, 25)
    types = np.array([TL, BR, BR, TL, BR])
    xs = np.array([5, 27, 24, 8, 40])
    ys = np.array([5, 25, 26, 5, 40])
    confs = np.array([0.9, 0.5, 0.4, 0.8, 0.3])
    groups = group_keypoints(types, xs, ys, confs, mid, 6.0, 10.0)
    first = groups[0]
    assert tuple(first[TL, :2]) == (5, 5) and tuple(first[BR, :2]) == (24, 26)  # nearest (1.41 < 2), not best
    # TL (8, 5) and BR (27, 25) lie within 10 px of the group's TL and BR: discarded as seeds;
    # BR (40, 40) seeds a group of its own
    assert len(groups) == 2 and tuple(groups[1][BR, :2]) == (40, 40) and groups[1][:, 3].sum() == 1


def test_voting_peaks_at_the_keypoint_and_normalises_by_the_disc_area():
    lab = squares()
    heat, short, _ = perfect_maps(lab, 1)
    votes = vote_maps(heat, short, 5.0)
    assert votes[TL, 10, 12] == pytest.approx(81 / (np.pi * 25))
    t, x, y, c = find_peaks(smooth_votes(votes, 2.0), 0.004)
    assert {(int(a), int(b)) for a, b in zip(x[t == TL], y[t == TL])} == {(12, 10), (50, 60), (80, 20)}


def test_crop_bounds_follow_the_codes_rounding():
    box = (5, 10, 30, 21)  # x1, y1, x2, y2
    assert crop_bounds(box, 0, 64, 64) == (10, 21, 5, 30)
    assert crop_bounds(box, 1, 32, 32) == (5, 10, 2, 15)  # 2.5 -> 2 (half to even), 10.5 -> 10
    assert crop_bounds(box, 0, 64, 64, inclusive=True) == (10, 22, 5, 31)
    assert crop_bounds(box, 3, 8, 8) == (1, 3, 1, 4)  # 1.25 -> 1, 2.625 -> 3; 0.625 -> 1, 3.75 -> 4
    assert crop_bounds(box, 4, 4, 4) is None  # rows 0.625 -> 1 .. 1.3125 -> 1: under 2 px
    assert crop_bounds((0, 0, 63, 63), 0, 64, 64) == (0, 63, 0, 63)


# ---------------------------------------------------------------------------------------------------
# network, training hook, prediction


def test_lr_decays_per_epoch_through_the_shared_trainer(tmp_path):
    from objguided.engine.trainer import TrainConfig, fit

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    data = [torch.randn(4, 2) for _ in range(2)]
    decay = EpochDecay(model, 0.1, 0.5, start=1)
    cfg = TrainConfig(epochs=4, batch_size=4, lr=0.1, log_every=1, progress=False)
    with decay:
        fit(model, decay.wrap(lambda epoch: data), lambda m, x: m(x).pow(2).mean(), cfg, tmp_path)
    rows = [r.split(",") for r in (tmp_path / "losses.csv").read_text().splitlines()[1:]]
    lrs = {int(r[0]): float(r[-2]) for r in rows}
    assert lrs == {1: 0.1, 2: 0.1, 3: 0.05, 4: 0.025}
    # the hook is gone afterwards: another optimizer keeps its own rate
    other = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(other.parameters(), lr=0.3)
    other(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert opt.param_groups[0]["lr"] == 0.3


def test_loss_terms_and_shapes(tmp_path):
    from objguided_methods.keypoint_graph import TrainSamples

    cfg = method().make_config({**TINY})
    lab = squares(64)
    img = (lab > 0).astype(np.uint8) * 200
    ds = TrainSamples([(img, lab)], cfg)
    images, targets = TrainSamples.collate([ds[(0, 1)], ds[(0, 2)]])
    assert images.shape == (2, 3, 64, 64)
    assert [t[0].shape[-1] for t in targets["scales"]] == [64, 32, 16, 8]
    torch.manual_seed(0)
    net = KeypointGraphNet("resnet18", None, 3, 16)
    terms = TrainSamples.loss(net, (images, targets))
    assert {"total", "kp0", "short0", "mid0", "kp3", "seg"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    assert float(terms["seg"].detach()) > 0
    terms["total"].backward()


@pytest.mark.parametrize("backbone", ["resnet34", "resnet50"])
def test_other_backbones_give_every_scale(backbone):
    net = KeypointGraphNet(backbone, None, 3, 8).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in out["scales"][0]] == [(5, 32, 32), (10, 32, 32), (40, 32, 32)]
    assert [sc[0].shape[-1] for sc in out["scales"]] == [32, 16, 8, 4]
    logits, crop = net.segment(out["seg_feats"], 0, (2, 3, 29, 30))
    assert tuple(logits.shape) == (27, 27) and crop == (3, 30, 2, 29)


def test_predict_yields_instances_at_the_original_size():
    cfg = method().make_config({**TINY, "max_detections": 20})
    torch.manual_seed(0)
    net = KeypointGraphNet("resnet18", None, 3, 16)
    state = {"model": net.state_dict(), "net_config": {"backbone": "resnet18", "pretrained": None, "head_kernel": 3,
                                                       "head_width": 16, "radius": 5.0, "inclusive_boxes": False}}
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (70, 100), dtype=np.uint8), rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)]
    out = list(method().predict(state, iter(images), cfg, "cpu"))
    assert len(out) == 2
    for image, instances in zip(images, out):
        assert len(instances) <= 20
        for inst in instances:
            assert isinstance(inst, Instance) and inst.mask.shape == image.shape[:2] and inst.mask.dtype == bool
            assert inst.mask.any()


# ---------------------------------------------------------------------------------------------------
# learning

#: the learning test's schedule (2 shared CPU cores, one torch thread). Nuclei of mean radius 7-11 px:
#: the default 3-11 px would leave most objects under the method's 13 px keypoint minimum at 128 px.
LEARN = {"backbone": "resnet18", "pretrained": None, "num_workers": 0, "input_size": 128, "batch_size": 2,
         "lr": 1e-3, "max_steps": 60, "head_kernel": 3, "head_width": 32, "augment": False, "log_every": 10}


@pytest.mark.slow
def test_learns_to_segment_its_training_images(tmp_path):
    """60 steps from scratch on 4 synthetic nuclei images (128 px, radius 7-11) take APseg@0.5 on those
    images from 0 (untrained) to >= 0.2 (0.36 measured)."""
    from objguided.data.canonical import write_sample
    from objguided.data.synthetic import generate
    from objguided.engine.run import predict_run, train_run
    from objguided.metrics.score import score_predictions

    data = tmp_path / "data"
    ids = []
    for image_id, image, labels in generate("nuclei", 4, 128, 1, min_radius=7.0, max_radius=11.0):
        write_sample(data, image_id, image, labels)
        ids.append(image_id)
    (data / "split.json").write_text(json.dumps({"train": ids, "val": [], "test": [], "source": "seeded", "seed": 1}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: one thread is faster than oversubscribed ones
    try:
        started = time.perf_counter()
        scores = {}
        for name, steps in (("untrained", 1), ("trained", LEARN["max_steps"])):
            params = {**LEARN, "max_steps": steps, "lr": LEARN["lr"] if steps > 1 else 1e-12}
            run = tmp_path / name
            train_run("keypoint_graph", name, params, data, data / "split.json", 0, run / "model.pt", "cpu")
            predict_run(run / "model.pt", data, data / "split.json", "train", run / "pred.json", "cpu")
            m = score_predictions(data, run / "pred.json", split_path=data / "split.json", subset="train",
                                  extras=False)
            scores[name] = m["ap_seg"][0]
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    print(f"learning test: APseg@0.5 untrained {scores['untrained']:.3f} -> {scores['trained']:.3f} after "
          f"{LEARN['max_steps']} steps, {seconds:.0f} s")
    assert scores["trained"] >= 0.2 and scores["trained"] > scores["untrained"] + 0.15
