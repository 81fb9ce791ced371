"""Pins of the paper's loss and of its auxiliary feature refinement, on cases small enough to compute
by hand (every expected number below is written out from the definitions, not from our code).

The authors' code (github yijingru/ObjGuided-Instance-Segmentation @ 7d6ec9d): ``loss.py``
``CtdetLoss.forward``: ``hm_loss + 0.1*wh_loss + off_loss`` (+ ``2*loss_seg``) (+ ``loss_rend``);
``FocalLoss`` divided by the number of centres; ``RegL1Loss`` sum / (mask.sum() + 1e-4) with the mask
expanded over both channels; ``seg_loss`` = mean over ROIs of the per-ROI mean BCE;
``rend_points_loss`` = one mean over the per-ROI point BCEs of both heads. ``models/network.py``
``rend_grids_sampling_train``: uncertainty ``-|2p - 1|`` of the detached ROI *probabilities*, k*N
uniform points, the int(beta*N) most uncertain kept, N = H*W // 8; the point labels are the soft GT ROI
sampled at the points (``point_sample(gt_roi, grids)``), the heads Conv1d(64) on e1 and Conv1d(128) on
cat(e1, e2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import objguided.models.network as network
from objguided.models.config import ModelConfig
from objguided.models.network import ObjGuidedNet
from objguided.models.targets import build_targets

torch.set_num_threads(1)


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def bce(z: float, t) -> np.ndarray:
    """Binary cross-entropy of logit z against (soft) target t."""
    return softplus(z) - np.asarray(t, np.float64) * z


def step_profile(u, first: int, last: int) -> np.ndarray:
    """Bilinear sample at coordinates u of a 0/1 row that is 1 on the pixels first..last."""
    u = np.asarray(u, np.float64)
    return np.clip(np.minimum(u - (first - 1), (last + 1) - u), 0, 1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None)).train()


def _set_constant_outputs(net, hm_logit, wh, off, seg_logit, point_logits):
    """Zero the last layer of every head so its output is its bias alone."""
    with torch.no_grad():
        for head, bias in ((net.heads.hm, [hm_logit]), (net.heads.wh, wh), (net.heads.reg, off),
                           (net.seg.head, [seg_logit])):
            head[-1].weight.zero_()
            head[-1].bias.copy_(torch.tensor(bias))
        for head, bias in ((net.seg.point_head0, point_logits[0]), (net.seg.point_head1, point_logits[1])):
            head.weight.zero_()
            head.bias.fill_(bias)


# ------------------------------------------------------------------------------------ total loss

def test_total_loss_is_hm_plus_0_1_wh_plus_off_plus_2_seg_plus_point_by_hand(net, monkeypatch):
    """One 8 x 10 px object (x 20..27, y 24..33) in a 64 x 64 input, constant head outputs.

    Targets: centre (23.5, 28.5) / 4 = (5.875, 7.125) -> cell (5, 7), offset (0.875, 0.125), size
    (2, 2.5) cells, Gaussian radius int(r((3, 2))) = 0: a single 1 on a 16 x 16 map.
    hm (focal, alpha 2, beta 4, / 1 centre) = -(log p (1-p)^2 + 255 log(1-p) p^2), p = sigmoid(b);
    wh = (|1.5 - 2| + |3.5 - 2.5|) / (2 + 1e-4); off = (|0.5 - 0.875| + |-0.25 - 0.125|) / (2 + 1e-4);
    seg = mean over the 11 x 8 ROI grid (1.1 x the box about its centre, int(8.8) = 8 and int(11) = 11
    points, align_corners) of BCE(c, soft target: the mask sampled bilinearly, 0.1 at the grid's ends);
    point = mean of the two heads' mean BCE against the soft target sampled at the kept points.
    """
    b, wh, off, c, d0, d1 = -1.0, (1.5, 3.5), (0.5, -0.25), 0.8, 0.7, -0.4
    _set_constant_outputs(net, b, wh, off, c, (d0, d1))
    m = np.zeros((1, 64, 64), bool)
    m[0, 24:34, 20:28] = True
    t = build_targets(m, net.cfg)
    assert t["ind"][0] == 7 * 16 + 5 and (t["hm"] == 1).sum() == 1 and (t["hm"] > 0).sum() == 1
    picked = []
    real = network.select_uncertain_points
    monkeypatch.setattr(network, "select_uncertain_points",
                        lambda *a, **k: picked.append(real(*a, **k)) or picked[-1])
    loss = net.loss(torch.zeros(1, 3, 64, 64), [{k: torch.as_tensor(v) for k, v in t.items()}])

    p = 1 / (1 + math.exp(-b))
    hm = -(math.log(p) * (1 - p) ** 2 + 255 * math.log(1 - p) * p ** 2)
    wh_l = (abs(1.5 - 2.0) + abs(3.5 - 2.5)) / (2 + 1e-4)
    off_l = (abs(0.5 - 0.875) + abs(-0.25 - 0.125)) / (2 + 1e-4)
    xs = np.linspace(23.5 - 4.4, 23.5 + 4.4, 8)  # 1.1 x 8 px about x = 23.5
    ys = np.linspace(28.5 - 5.5, 28.5 + 5.5, 11)  # 1.1 x 10 px about y = 28.5
    px, py = step_profile(xs, 20, 27), step_profile(ys, 24, 33)
    assert px[0] == pytest.approx(0.1) and px[-1] == pytest.approx(0.1)  # soft at the ends
    seg = float(bce(c, np.outer(py, px)).mean())
    # the point labels: the soft ROI target (the GT sampled on the grid) sampled bilinearly at the points
    (pts,) = picked
    assert pts.shape == (1, int(0.75 * (88 // 8)), 2)  # N = 11, int(0.75 * 11) = 8 points
    u = pts[0].double().numpy()
    labels = np.interp(u[:, 0] * 7, np.arange(8), px) * np.interp(u[:, 1] * 10, np.arange(11), py)
    point = (bce(d0, labels).mean() + bce(d1, labels).mean()) / 2
    expect = {"hm": hm, "wh": wh_l, "off": off_l, "seg": seg, "point": point,
              "total": hm + 0.1 * wh_l + off_l + 2 * seg + point}
    for k, v in expect.items():
        assert float(loss[k].detach()) == pytest.approx(v, rel=1e-5), k


def test_seg_term_is_the_mean_of_per_roi_means_not_of_all_pixels(net):
    """Code ``seg_loss``: ``torch.mean(torch.stack([F.binary_cross_entropy(pr_roi, gt_roi) ...]))``:
    every ROI weighs the same, whatever its size. Two squares (16 px and 4 px), constant logit c."""
    c = 0.6
    _set_constant_outputs(net, -2.19, (0.0, 0.0), (0.0, 0.0), c, (0.0, 0.0))
    m = np.zeros((2, 64, 64), bool)
    m[0, 4:20, 4:20] = True  # 16 px: ROI grid 17 x 17 over 1.1 x 16 = 17.6 px
    m[1, 40:44, 40:44] = True  # 4 px: ROI grid 4 x 4 over 4.4 px
    t = build_targets(m, net.cfg)
    loss = net.loss(torch.zeros(1, 3, 64, 64), [{k: torch.as_tensor(v) for k, v in t.items()}])
    means = []
    for first, last in ((4, 19), (40, 43)):
        w = last - first + 1
        centre, half = (first + last) / 2, float(np.float32(w * np.float32(1.1))) / 2
        u = np.linspace(centre - half, centre + half, int(np.float32(w * np.float32(1.1))))
        prof = step_profile(u, first, last)
        means.append(float(bce(c, np.outer(prof, prof)).mean()))
    assert float(loss["seg"].detach()) == pytest.approx((means[0] + means[1]) / 2, rel=1e-5)
    assert abs(means[0] - means[1]) > 0.05  # a pixel-weighted mean would differ


def test_focal_loss_negatives_are_weighted_by_one_minus_gt_to_the_fourth():
    """CornerNet focal loss, alpha 2 (the (1-p)^2, p^2 factors), beta 4 (the (1-gt)^4 factor)."""
    from objguided.models.losses import focal_loss

    logits = torch.tensor([[[[0.3, -0.2, 1.1]]]])
    gt = torch.tensor([[[[1.0, 0.6, 0.25]]]])
    p = torch.sigmoid(logits)[0, 0, 0].double().tolist()
    want = -(math.log(p[0]) * (1 - p[0]) ** 2 + math.log(1 - p[1]) * p[1] ** 2 * 0.4 ** 4
             + math.log(1 - p[2]) * p[2] ** 2 * 0.75 ** 4)
    assert float(focal_loss(logits, gt)) == pytest.approx(want, rel=1e-6)
    assert float(focal_loss(logits, gt, clamp=False)) == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------------------- refinement: heads

def _point_inputs(n=2, h=12, w=10, label=0.3, logit=2.0):
    a = torch.linspace(-1.0, 1.0, 64)  # e1: constant over space, one value per channel
    bb = torch.linspace(0.5, -0.5, 64) ** 2  # e2: another constant per channel
    e1 = a.view(1, 64, 1, 1).expand(n, 64, h, w).contiguous()
    e2 = bb.view(1, 64, 1, 1).expand(n, 64, h // 2, w // 2).contiguous()
    logits = torch.full((n, 1, h, w), logit)
    target = torch.full((n, 1, h, w), label)
    return logits, [e1, e2], target, a.double(), bb.double()


def test_refinement_heads_read_e1_and_cat_e1_e2_and_learn_soft_ground_truth_labels_by_hand(net):
    """On constant feature maps every sampled point has the same features, so each head's logit is
    known: z0 = w0 . e1 + b0; z1 = w1[:64] . e1 + w1[64:] . e2 + b1 (e1 first, as ``cat([e1, e2])``).
    The labels are the soft target (0.3 here, not the prediction sigmoid(2) = 0.88, nor 0/1)."""
    logits, fused, target, a, bb = _point_inputs()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w0 = torch.randn(64, generator=g) * 0.2
        w1 = torch.randn(128, generator=g) * 0.2
        net.seg.point_head0.weight.copy_(w0.view(1, 64, 1))
        net.seg.point_head0.bias.fill_(0.1)
        net.seg.point_head1.weight.copy_(w1.view(1, 128, 1))
        net.seg.point_head1.bias.fill_(-0.2)
        res = net._point_losses(logits, fused, target)
    z0 = float(w0.double() @ a) + 0.1
    z1 = float(w1[:64].double() @ a + w1[64:].double() @ bb) - 0.2
    assert len(res) == 2 and all(r.shape == (2,) for r in res)
    np.testing.assert_allclose(res[0].double().numpy(), bce(z0, [0.3, 0.3]), rtol=1e-5)
    np.testing.assert_allclose(res[1].double().numpy(), bce(z1, [0.3, 0.3]), rtol=1e-5)
    # both inputs of the second head matter, in that order
    assert abs(z1 - (float(w1[:64].double() @ bb + w1[64:].double() @ a) - 0.2)) > 0.1


def test_refinement_head_one_uses_e2_and_head_zero_does_not(net):
    """Changing e2 alone changes head 1's loss and leaves head 0's."""
    logits, fused, target, _, _ = _point_inputs()
    with torch.no_grad():
        net.seg.point_head0.weight.normal_(0, 0.2)
        net.seg.point_head1.weight.normal_(0, 0.2)
        r0 = net._point_losses(logits, fused, target)
        fused2 = [fused[0], fused[1] * -3.0 + 1.0]
        r1 = net._point_losses(logits, fused2, target)
        fused1 = [fused[0] * -3.0 + 1.0, fused[1]]
        r2 = net._point_losses(logits, fused1, target)
    torch.testing.assert_close(r0[0], r1[0])
    assert (r0[1] - r1[1]).abs().min() > 1e-4
    assert (r0[0] - r2[0]).abs().min() > 1e-4 and (r0[1] - r2[1]).abs().min() > 1e-4


def test_point_labels_come_from_the_ground_truth_not_the_prediction(net):
    """The same features and heads against two different soft targets: the loss follows the target
    exactly as BCE(z, t) does, and does not move when only the prediction (the logits) changes."""
    with torch.no_grad():
        net.seg.point_head0.weight.zero_()
        net.seg.point_head0.bias.fill_(0.5)
        net.seg.point_head1.weight.zero_()
        net.seg.point_head1.bias.fill_(-1.5)
        out = {}
        for label in (0.2, 0.65):
            for logit in (-3.0, 0.0, 4.0):
                logits, fused, target, _, _ = _point_inputs(label=label, logit=logit)
                res = net._point_losses(logits, fused, target)
                out[label, logit] = [float(r.mean()) for r in res]
    for (label, _), (l0, l1) in out.items():
        assert l0 == pytest.approx(float(bce(0.5, label)), rel=1e-5)
        assert l1 == pytest.approx(float(bce(-1.5, label)), rel=1e-5)


# ------------------------------------------------------------------------- refinement: sampling

def test_uncertainty_is_computed_on_probabilities_not_logits(net, monkeypatch):
    """ROI logits 0 on the left half (p = 0.5: the most uncertain) and 0.5 on the right (p = 0.62).
    On probabilities, -|2p - 1| keeps the left half; on logits it would keep the right half."""
    picked = []
    real = network.select_uncertain_points
    monkeypatch.setattr(network, "select_uncertain_points",
                        lambda *a, **k: picked.append(real(*a, **k)) or picked[-1])
    logits, fused, target, _, _ = _point_inputs(n=3, h=16, w=16)
    logits[..., :8] = 0.0
    logits[..., 8:] = 0.5
    net.point_generator = torch.Generator().manual_seed(3)
    try:
        with torch.no_grad():
            net._point_losses(logits, fused, target)
    finally:
        net.point_generator = None
    (pts,) = picked
    assert pts.shape == (3, 24, 2)  # N = 256 // 8 = 32: int(0.75 * 32) = 24 of 96
    assert float(pts[..., 0].max()) <= 8 / 15  # every kept point in the left half (columns 0..7 of 0..15)


def test_points_per_roi_are_int_beta_n_of_k_n_uniform_with_n_hw_over_8(net, monkeypatch):
    """Through the training loss: each ROI (H x W at full resolution) gets int(0.75 * (H*W // 8))
    points chosen among 3 * (H*W // 8) uniform ones (k = 3, beta = 0.75, D = 8 from the config)."""
    calls = []
    real = network.select_uncertain_points

    def spy(probs, k, beta, divisor, generator=None):
        out = real(probs, k, beta, divisor, generator)
        calls.append((tuple(probs.shape), k, beta, divisor, tuple(out.shape),
                      float(probs.detach().min()), float(probs.detach().max())))
        return out

    monkeypatch.setattr(network, "select_uncertain_points", spy)
    m = np.zeros((2, 64, 64), bool)
    m[0, 5:25, 10:26] = True  # 20 rows x 16 columns -> ROI 22 x 17 (int(1.1 * 20) = 22, int(1.1 * 16) = 17)
    m[1, 40:48, 40:60] = True  # 8 rows x 20 columns -> ROI 8 x 22
    t = build_targets(m, net.cfg)
    torch.manual_seed(0)
    net.loss(torch.randn(1, 3, 64, 64) * 0.3, [{k: torch.as_tensor(v) for k, v in t.items()}])
    shapes = sorted(c[0][2:] for c in calls)
    assert shapes == [(8, 22), (22, 17)]
    for (n, _, h, w), k, beta, divisor, out, lo, hi in calls:
        assert (k, beta, divisor) == (3.0, 0.75, 8)
        assert out == (n, int(0.75 * ((h * w) // 8)), 2)
        assert 0.0 <= lo and hi <= 1.0  # probabilities, not logits


def test_points_are_uniform_in_the_roi_and_sampled_with_align_corners():
    """``torch.rand`` points in [0, 1)^2 mapped onto the ROI's corner pixel centres (grid_sample with
    align_corners=True): point (0, 0) reads pixel (0, 0), point (1, 1) pixel (H-1, W-1)."""
    from objguided.models.refine import point_sample

    feat = torch.arange(12.0).view(1, 1, 3, 4)
    pts = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [1 / 3, 0.5]]])
    torch.testing.assert_close(point_sample(feat, pts)[0, 0], torch.tensor([0.0, 11.0, 5.0]))


def test_point_term_is_one_mean_over_both_heads_per_roi_losses(net, monkeypatch):
    """loss["point"] = mean(cat(per-ROI BCEs of head 0, per-ROI BCEs of head 1)) over all ROIs."""
    got = []
    real = ObjGuidedNet._point_losses
    monkeypatch.setattr(ObjGuidedNet, "_point_losses",
                        lambda self, *a: got.append(real(self, *a)) or got[-1])
    m = np.zeros((3, 64, 64), bool)
    m[0, 5:25, 10:26] = True
    m[1, 40:48, 40:60] = True
    m[2, 30:36, 4:12] = True
    t = build_targets(m, net.cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        net.seg.point_head0.weight.normal_(0, 0.3)
        net.seg.point_head1.weight.normal_(0, 0.3)
        loss = net.loss(torch.randn(1, 3, 64, 64) * 0.3, [{k: torch.as_tensor(v) for k, v in t.items()}])
    parts = torch.cat([r for res in got for r in res])
    assert parts.numel() == 2 * 3  # every ROI has levels 0 and 1: both heads
    assert float(loss["point"]) == pytest.approx(float(parts.mean()), rel=1e-6)


# ---------------------------------------------------------------------------- edge cases pinned

def test_saturated_heatmap_gives_a_finite_loss_unless_the_codes_unclamped_loss_is_asked():
    """Named deviation 1: the focal loss clamps the sigmoid to [1e-4, 1 - 1e-4] (CenterNet) by default;
    ``clamp_heatmap=False`` is the authors' code, where a saturated output gives inf / NaN."""
    from objguided.models.losses import focal_loss

    gt = torch.zeros(1, 1, 4, 4)
    gt[0, 0, 1, 1] = 1.0
    for logit in (-120.0, 60.0):  # a centre predicted as certain background, or background as certain
        logits = torch.full((1, 1, 4, 4), logit)
        clamped = float(focal_loss(logits, gt))
        assert math.isfinite(clamped)
        p = min(max(1 / (1 + math.exp(-logit)), 1e-4), 1 - 1e-4)
        want = -(math.log(p) * (1 - p) ** 2 + 15 * math.log(1 - p) * p ** 2)
        assert clamped == pytest.approx(want, rel=1e-4)
        assert not math.isfinite(float(focal_loss(logits, gt, clamp=False)))
    for clamp, finite in ((True, True), (False, False)):
        torch.manual_seed(0)
        net = ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None, head_width=8, clamp_heatmap=clamp))
        with torch.no_grad():
            net.heads.hm[-1].weight.zero_()
            net.heads.hm[-1].bias.fill_(-120.0)
        m = np.zeros((1, 64, 64), bool)
        m[0, 8:16, 8:16] = True
        t = build_targets(m, net.cfg)
        loss = net.train().loss(torch.zeros(1, 3, 64, 64), [{k: torch.as_tensor(v) for k, v in t.items()}])
        assert math.isfinite(float(loss["hm"].detach())) is finite


def test_an_image_without_objects_has_zero_seg_and_point_terms(net):
    """No ROI: ``seg`` and ``point`` are 0 tensors, left out of the total (code: ``loss_seg = None``,
    ``loss = loss_dec``); the focal loss is its negative part alone."""
    _set_constant_outputs(net, -1.0, (1.0, 1.0), (0.0, 0.0), 0.5, (0.0, 0.0))
    t = build_targets(np.zeros((0, 64, 64), bool), net.cfg)
    loss = net.loss(torch.zeros(1, 3, 64, 64), [{k: torch.as_tensor(v) for k, v in t.items()}])
    p = 1 / (1 + math.exp(1.0))
    hm = -(256 * math.log(1 - p) * p ** 2)
    for k in ("seg", "point", "wh", "off"):
        assert isinstance(loss[k], torch.Tensor) and float(loss[k].detach()) == 0.0, k
    assert float(loss["hm"].detach()) == pytest.approx(hm, rel=1e-5)
    assert float(loss["total"].detach()) == pytest.approx(hm, rel=1e-5)


def test_seg_loss_skips_empty_roi_batches_and_is_none_without_rois():
    from objguided.models.losses import roi_bce

    empty = torch.zeros(0, 1, 3, 3)
    a = torch.full((1, 1, 2, 2), 1.0)
    want = float(bce(1.0, 0.25))
    got = roi_bce([empty, a, empty], [empty, torch.full_like(a, 0.25), empty])
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert roi_bce([empty], [empty]) is None and roi_bce([], []) is None


def test_refinement_points_are_drawn_from_the_networks_point_generator(net):
    """``point_generator`` (a torch.Generator) fixes the refinement's random points: the same seed gives
    the same point loss whatever the global RNG did in between (the golden test relies on it)."""
    with torch.no_grad():
        net.seg.point_head0.weight.normal_(0, 0.5)
        net.seg.point_head1.weight.normal_(0, 0.5)
    logits = torch.linspace(-2, 2, 2 * 16 * 16).view(2, 1, 16, 16)
    fused = [torch.randn(2, 64, 16, 16), torch.randn(2, 64, 8, 8)]
    target = torch.rand(2, 1, 16, 16)
    res = []
    for seed, global_seed in ((5, 0), (5, 1), (6, 0)):
        torch.manual_seed(global_seed)
        net.point_generator = torch.Generator().manual_seed(seed)
        try:
            with torch.no_grad():
                res.append(torch.cat(net._point_losses(logits, fused, target)))
        finally:
            net.point_generator = None
    torch.testing.assert_close(res[0], res[1])
    assert not torch.allclose(res[0], res[2])


def test_rois_too_small_for_points_or_for_a_second_level_lose_only_those_terms(net):
    """A ROI with int(0.75 * (HW // 8)) = 0 points gives no point loss (code: ``if grids.shape[1] == 0:
    continue``); a ROI with one level gives head 0's loss only (code: ``if len(feat_rois) > 1``); one
    point is enough for both heads."""
    fused_two = [torch.randn(1, 64, 4, 4), torch.randn(1, 64, 2, 2)]
    with torch.no_grad():
        assert net._point_losses(torch.zeros(1, 1, 3, 3), [torch.randn(1, 64, 3, 3)], torch.zeros(1, 1, 3, 3)) == []
        one = net._point_losses(torch.zeros(1, 1, 4, 4), fused_two[:1], torch.zeros(1, 1, 4, 4))
        two = net._point_losses(torch.zeros(1, 1, 4, 4), fused_two, torch.zeros(1, 1, 4, 4))
    assert len(one) == 1 and len(two) == 2 and all(r.shape == (1,) and torch.isfinite(r).all() for r in one + two)


def test_point_selection_defaults_are_the_papers():
    """``select_uncertain_points`` defaults: k = 3, beta = 0.75, N = HW // 8 (16 x 16: 24 of 96)."""
    from objguided.models.refine import select_uncertain_points

    probs = torch.rand(1, 1, 16, 16)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = select_uncertain_points(probs, generator=g1)
    b = select_uncertain_points(probs, 3.0, 0.75, 8, generator=g2)
    assert a.shape == (1, 24, 2) and torch.equal(a, b)
    assert select_uncertain_points(torch.rand(2, 1, 2, 3)).shape == (2, 0, 2)  # N = 0: no point
    # Table II's k = beta = 1 on a 3 x 3 ROI: N = 1, one point drawn and kept
    assert select_uncertain_points(torch.rand(2, 1, 3, 3), 1.0, 1.0, 8).shape == (2, 1, 2)
