"""Loss values on hand-made inputs, the training smoke test and the backbone's weight loading."""

import logging
import math
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from objguided.models.backbone import resnet_features
from objguided.models.config import ModelConfig
from objguided.models.losses import focal_loss, reg_l1_loss, roi_bce
from objguided.models.network import ObjGuidedNet
from objguided.models.targets import build_targets

torch.set_num_threads(1)


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_focal_loss_by_hand():
    logits = torch.tensor([[[[0.5, -1.0], [2.0, -3.0]]]])
    gt = torch.tensor([[[[1.0, 0.5], [0.0, 0.9]]]])
    p = [_sig(v) for v in (0.5, -1.0, 2.0, -3.0)]
    pos = math.log(p[0]) * (1 - p[0]) ** 2
    neg = (math.log(1 - p[1]) * p[1] ** 2 * 0.5 ** 4 + math.log(1 - p[2]) * p[2] ** 2 * 1.0
           + math.log(1 - p[3]) * p[3] ** 2 * 0.1 ** 4)
    assert float(focal_loss(logits, gt)) == pytest.approx(-(pos + neg) / 1, rel=1e-5)
    # two centres in the batch: normalised by 2
    gt2 = gt.clone()
    gt2[0, 0, 1, 1] = 1.0
    pos2 = pos + math.log(p[3]) * (1 - p[3]) ** 2
    neg2 = neg - math.log(1 - p[3]) * p[3] ** 2 * 0.1 ** 4
    assert float(focal_loss(logits, gt2)) == pytest.approx(-(pos2 + neg2) / 2, rel=1e-5)
    # no centre at all: the negative term alone
    gt0 = torch.zeros_like(gt)
    negs = sum(math.log(1 - q) * q ** 2 for q in p)
    assert float(focal_loss(logits, gt0)) == pytest.approx(-negs, rel=1e-5)


def test_focal_loss_clamp_avoids_nan():
    logits = torch.tensor([[[[100.0, 0.0]]]])
    gt = torch.tensor([[[[0.0, 1.0]]]])
    assert not math.isfinite(float(focal_loss(logits, gt, clamp=False)))  # the authors' code
    assert math.isfinite(float(focal_loss(logits, gt, clamp=True)))


def test_l1_normalisation():
    pred = torch.zeros(1, 2, 4, 4)
    pred[0, :, 1, 2] = torch.tensor([3.0, 1.0])  # object 0 at flat index 6
    pred[0, :, 3, 0] = torch.tensor([0.5, 0.5])  # object 1 at flat index 12
    ind = torch.tensor([[6, 12, 0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.uint8)
    target = torch.tensor([[[2.0, 2.0], [0.0, 1.0], [9.0, 9.0]]])  # the third row is masked out
    expected = (1 + 1 + 0.5 + 0.5) / (2 * 2 + 1e-4)
    assert float(reg_l1_loss(pred, mask, ind, target)) == pytest.approx(expected, rel=1e-6)
    assert float(reg_l1_loss(pred, mask * 0, ind, target)) == 0.0


def test_seg_loss_is_mean_over_rois_of_per_roi_means():
    a = torch.zeros(1, 1, 2, 2)  # one 2x2 ROI, p = 0.5 everywhere, target 1: BCE = log 2
    b = torch.full((1, 1, 4, 4), 2.0)  # one 4x4 ROI, target 1: BCE = log(1 + e^-2)
    loss = roi_bce([a, b], [torch.ones_like(a), torch.ones_like(b)])
    assert float(loss) == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2, rel=1e-6)
    assert roi_bce([], []) is None


def _targets(s=64):
    cfg = ModelConfig(backbone="resnet18", pretrained=None)
    m = np.zeros((4, s, s), bool)
    m[0, 5:15, 8:20] = True
    m[1, 4:14, 40:46] = True
    m[2, 28:62, 26:60] = True  # 34 px: reaches level 4 (1.1 * 34 / 16 >= 2)
    m[3, 50:52, 2:12] = True  # too thin: heatmap negative, no mask target
    t1 = build_targets(m, cfg)
    t2 = build_targets(m[:2, ::-1].copy(), cfg)
    return [{k: torch.as_tensor(v) for k, v in t.items()} for t in (t1, t2)]


def test_forward_loss_backward_smoke():
    torch.manual_seed(0)
    net = ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None)).train()
    x = torch.randn(2, 3, 64, 64) * 0.2
    out = net(x)
    assert out["hm"].shape == (2, 1, 16, 16) and out["wh"].shape == (2, 2, 16, 16)
    assert [f.shape[-1] for f in out["seg_feats"]] == [64, 32, 16, 8, 4]
    loss = net.loss(x, _targets())
    assert set(loss) == {"total", "hm", "wh", "off", "seg", "point"}
    assert all(math.isfinite(float(v.detach())) for v in loss.values())
    assert float(loss["seg"].detach()) > 0 and float(loss["point"].detach()) > 0
    w = net.cfg
    recon = (w.hm_weight * loss["hm"] + w.wh_weight * loss["wh"] + w.off_weight * loss["off"]
             + w.seg_weight * loss["seg"] + w.point_weight * loss["point"])
    assert float(loss["total"].detach()) == pytest.approx(float(recon.detach()), rel=1e-6)
    loss["total"].backward()
    for name, p in [("backbone.conv1", net.backbone.conv1.weight), ("seg.c0_conv", net.seg.c0_conv[0].weight),
                    ("seg.head", net.seg.head[-1].weight), ("point_head0", net.seg.point_head0.weight),
                    ("point_head1", net.seg.point_head1.weight), ("combine[3]", net.seg.combine[3].up[0].weight),
                    ("heads.wh", net.heads.wh[0].weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_refine_off_gives_zero_point_loss():
    torch.manual_seed(0)
    net = ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None, refine=False)).train()
    loss = net.loss(torch.randn(2, 3, 64, 64) * 0.2, _targets())
    assert float(loss["point"].detach()) == 0.0 and float(loss["seg"].detach()) > 0


def test_imagenet_offline_warns_once_and_builds(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with caplog.at_level(logging.WARNING):
        net = ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained="imagenet"))
    msgs = [r.getMessage() for r in caplog.records if "training from scratch" in r.getMessage()]
    assert len(msgs) == 1, msgs
    assert net.backbone.weights_source == "random"


def test_local_weights_file_is_loaded(tmp_path, caplog):
    torch.manual_seed(7)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    with caplog.at_level(logging.WARNING):
        feats = resnet_features("resnet18", str(path))
    assert not caplog.records and feats.weights_source == str(path)
    torch.testing.assert_close(feats.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    with caplog.at_level(logging.WARNING):
        resnet_features("resnet18", str(tmp_path / "missing.pth"))
    assert sum("training from scratch" in r.getMessage() for r in caplog.records) == 1
