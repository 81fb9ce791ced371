"""Pins of the paper's architecture (Yi et al., TMI 2021) and of the authors' released code
(github yijingru/ObjGuided-Instance-Segmentation @ 7d6ec9d, ``models/network.py`` and
``models/layers.py``). Each test is named after the fact it holds; a change that departs from the paper
or the code fails one of them.

The central idea pinned here is the *object guidance*: the segmentation branch crops the detection
branch's decoder features (c2, c3, c4), not the raw backbone maps (code: ``forward_dec`` returns
``feat = [x[0], x[1], c2_combine, c3_combine, c4_combine]`` and ``forward_seg`` crops those).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import objguided.models.network as network
from objguided.models.config import ModelConfig
from objguided.models.layers import CombinationModule
from objguided.models.network import ObjGuidedNet
from objguided.models.targets import build_targets

torch.set_num_threads(1)


# Function-scoped on purpose: a test that inspects a layer must build it itself, so that mutation
# testing (which runs only the tests that executed a mutated constructor) runs it.
@pytest.fixture
def r50():
    """The paper's network (ResNet-50), built only (no forward pass): widths and layers."""
    torch.manual_seed(0)
    return ObjGuidedNet(ModelConfig(backbone="resnet50", pretrained=None))


@pytest.fixture
def r18():
    torch.manual_seed(0)
    return ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None))


def _targets(size=64):
    m = np.zeros((3, size, size), bool)
    m[0, 6:20, 8:24] = True
    m[1, 30:46, 30:60] = True  # 30 px wide: reaches level 4
    m[2, 48:58, 4:14] = True
    cfg = ModelConfig(backbone="resnet18", pretrained=None)
    return [{k: torch.as_tensor(v) for k, v in build_targets(m, cfg).items()}]


def _conv(m, c_in, c_out, k):
    assert isinstance(m, nn.Conv2d), m
    got = (m.in_channels, m.out_channels, m.kernel_size, m.padding, m.stride)
    assert got == (c_in, c_out, (k, k), (k // 2, k // 2), (1, 1)), m


def _combination(cm, c_deep, c_skip, norm):
    _conv(cm.up[0], c_deep, c_skip, 3)
    _conv(cm.cat_conv[0], 2 * c_skip, c_skip, 1)
    for seq in (cm.up, cm.cat_conv):
        assert type(seq[1]) is norm and seq[1].num_features == c_skip
        assert isinstance(seq[2], nn.ReLU)


# ------------------------------------------------------------------------------- object guidance

def test_roi_levels_crop_the_decoder_features_not_the_raw_backbone(r18):
    """Paper (object-guided segmentation): the ROI branch reuses the detection branch's *object
    features*. Code: the five cropped maps are [c0_conv(image), conv1, c2_combine, c3_combine,
    c4_combine]; c2..c4 are the outputs of the BatchNorm combination modules, not layer1..layer3."""
    seen = {}
    hooks = [getattr(r18, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n in ("dec_c2", "dec_c3", "dec_c4")]
    hooks.append(r18.backbone.register_forward_hook(lambda m, i, o: seen.__setitem__("backbone", o)))
    try:
        x = torch.randn(1, 3, 64, 64) * 0.3
        r18.eval()
        with torch.no_grad():
            out = r18(x)
    finally:
        for h in hooks:
            h.remove()
    feats = out["seg_feats"]
    assert len(feats) == 5
    torch.testing.assert_close(feats[0], r18.seg.c0_conv(x))  # level 0: two 3x3 convs on the image
    assert feats[1] is seen["backbone"][0]  # level 1: conv1+bn+relu (stride 2, before the max-pool)
    assert feats[2] is seen["dec_c2"] and feats[3] is seen["dec_c3"] and feats[4] is seen["dec_c4"]
    for raw, dec in zip(seen["backbone"][1:4], feats[2:]):
        assert raw.shape[-1] == dec.shape[-1] and not torch.equal(raw[:, :dec.shape[1]], dec)
    # the detection heads read c2 as well
    torch.testing.assert_close(out["hm_logits"], r18.heads.hm(seen["dec_c2"]))


@pytest.mark.parametrize("path", ["training", "inference"])
def test_both_training_and_inference_crop_the_decoder_features(r18, monkeypatch, path):
    """The maps handed to the ROI cropper are the decoder's c2, c3, c4 on both paths (loss and detect)."""
    seen, cropped = {}, []
    hooks = [getattr(r18, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n in ("dec_c2", "dec_c3", "dec_c4")]
    real = network.crop_groups
    monkeypatch.setattr(network, "crop_groups",
                        lambda feats, groups: cropped.append(list(feats)) or real(feats, groups))
    x = torch.randn(1, 3, 64, 64) * 0.3
    try:
        if path == "training":
            r18.train()
            r18.loss(x, _targets())
        else:
            r18.eval()
            with torch.no_grad():
                r18.heads.wh[-1].bias.fill_(3.0)  # 12 px boxes: ROIs to crop
                try:
                    r18.detect(x, score_threshold=0.0, top_k=5)
                finally:
                    r18.heads.wh[-1].bias.zero_()
    finally:
        for h in hooks:
            h.remove()
    assert cropped, "no ROI was cropped"
    for feats in cropped:
        assert feats[2] is seen["dec_c2"] and feats[3] is seen["dec_c3"] and feats[4] is seen["dec_c4"]


def test_segmentation_loss_trains_the_detection_decoder(r18):
    """Object guidance in the gradient: the seg term alone reaches the decoder's deepest combination
    module (c4 is cropped at level 4), and does not reach the detection heads."""
    r18.train()
    r18.zero_grad(set_to_none=True)
    loss = r18.loss(torch.randn(1, 3, 64, 64) * 0.3, _targets())
    loss["seg"].backward()
    for name, p in [("dec_c4", r18.dec_c4.up[0].weight), ("dec_c3", r18.dec_c3.cat_conv[0].weight),
                    ("dec_c2", r18.dec_c2.cat_conv[0].weight)]:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert r18.heads.hm[0].weight.grad is None or float(r18.heads.hm[0].weight.grad.abs().sum()) == 0
    r18.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------- widths, kernels, norms

def test_detection_decoder_is_three_batchnorm_combination_modules_on_resnet50(r50):
    """Code: dec_c4 = CM(2048 -> 1024), dec_c3 = CM(1024 -> 512), dec_c2 = CM(512 -> 256), BatchNorm;
    3x3 conv on the upsampled deep map, 1x1 conv on [skip, up]."""
    assert r50.backbone.channels == (64, 256, 512, 1024, 2048)
    _combination(r50.dec_c4, 2048, 1024, nn.BatchNorm2d)
    _combination(r50.dec_c3, 1024, 512, nn.BatchNorm2d)
    _combination(r50.dec_c2, 512, 256, nn.BatchNorm2d)


def test_segmentation_fusion_uses_instancenorm_without_affine_or_running_stats(r50):
    """Code: seg_combine = [CM(64, 64), CM(256, 64), CM(512, 256), CM(1024, 512)] with
    ``nn.InstanceNorm2d(num_features=c)``: affine=False, track_running_stats=False (the paper's
    instance-normalisation equation has a learned scale and shift; the code, and so we, do not)."""
    widths = [(64, 64), (256, 64), (512, 256), (1024, 512)]
    assert len(r50.seg.combine) == 4
    for cm, (c_deep, c_skip) in zip(r50.seg.combine, widths):
        _combination(cm, c_deep, c_skip, nn.InstanceNorm2d)
        for norm in (cm.up[1], cm.cat_conv[1]):
            assert norm.affine is False and norm.track_running_stats is False
            assert not list(norm.parameters()) and norm.running_mean is None
    assert r50.seg.level_channels == (64, 64, 256, 512, 1024)


def test_level_zero_is_two_3x3_convs_on_the_image_and_the_seg_head_is_3x3_64_64_1(r50):
    c0 = r50.seg.c0_conv
    _conv(c0[0], 3, 64, 3)
    _conv(c0[2], 64, 64, 3)
    assert isinstance(c0[1], nn.ReLU) and isinstance(c0[3], nn.ReLU) and len(c0) == 4
    head = r50.seg.head
    _conv(head[0], 64, 64, 3)
    assert isinstance(head[1], nn.ReLU) and len(head) == 3
    _conv(head[2], 64, 1, 3)


def test_detection_heads_kernels_and_width_256(r50):
    """Code: hm 3x3 -> ReLU -> 1x1 (1 ch); wh 7x7 -> ReLU -> 7x7 (2 ch); reg 3x3 -> ReLU -> 1x1 (2 ch);
    head_conv 256, on c2 (256 ch)."""
    from objguided.models.layers import DetectionHeads

    for heads in (r50.heads, DetectionHeads(256)):  # 256 is also the class's default width
        for name, k1, k2, c_out in (("hm", 3, 1, 1), ("wh", 7, 7, 2), ("reg", 3, 1, 2)):
            head = getattr(heads, name)
            _conv(head[0], 256, 256, k1)
            assert isinstance(head[1], nn.ReLU) and len(head) == 3
            _conv(head[2], 256, c_out, k2)
    out = r50.heads(torch.zeros(1, 256, 8, 8))
    assert {k: tuple(v.shape) for k, v in out.items()} == \
        {"hm_logits": (1, 1, 8, 8), "wh": (1, 2, 8, 8), "reg": (1, 2, 8, 8)}


def test_heatmap_bias_starts_at_minus_2_19_and_size_offset_biases_at_zero(r50):
    """CenterNet's prior (code: ``fc[-1].bias.data.fill_(-2.19)`` for hm; ``fill_fc_weights`` sets every
    conv bias of wh and reg to 0): the initial heatmap is sigmoid(-2.19) = 0.10 everywhere."""
    torch.testing.assert_close(r50.heads.hm[-1].bias, torch.full((1,), -2.19))
    for name in ("wh", "reg"):
        for conv in (getattr(r50.heads, name)[0], getattr(r50.heads, name)[2]):
            assert float(conv.bias.detach().abs().max()) == 0.0, name
    fresh = ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None, head_width=16))
    torch.testing.assert_close(fresh.heads.hm[-1].bias, torch.full((1,), -2.19))


def test_point_heads_are_one_conv1d_on_e1_and_one_on_e1_e2(r50):
    """Code: point_head0 = Conv1d(64, 1, 1) (+ sigmoid), point_head1 = Conv1d(128, 1, 1) on
    cat(e1, e2)."""
    for head, c_in in ((r50.seg.point_head0, 64), (r50.seg.point_head1, 128)):
        assert isinstance(head, nn.Conv1d)
        assert (head.in_channels, head.out_channels, head.kernel_size) == (c_in, 1, (1,))


def test_combination_module_concatenates_skip_then_upsampled_deep():
    """Code: ``cat_conv(torch.cat((x_up, x_low), 1))``: the skip map first, the upsampled deep map
    second; the deep map is upsampled bilinearly with align_corners=False before the 3x3 conv."""
    torch.manual_seed(0)
    cm = CombinationModule(4, 3, "batch").eval()
    with torch.no_grad():
        cm.cat_conv[0].weight.zero_()
        cm.cat_conv[0].bias.zero_()
        for c in range(3):
            cm.cat_conv[0].weight[c, c] = 1.0  # output channel c = skip channel c
    deep, skip = torch.randn(1, 4, 3, 3), torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        out = cm(deep, skip)
        eps = cm.cat_conv[1].eps
        torch.testing.assert_close(out, torch.relu(skip / (1 + eps) ** 0.5))  # eval BatchNorm at its initial stats
        up = torch.nn.functional.interpolate(deep, size=(6, 6), mode="bilinear", align_corners=False)
        cm.cat_conv[0].weight.zero_()
        for c in range(3):
            cm.cat_conv[0].weight[c, 3 + c] = 1.0  # output channel c = upsampled channel c
        torch.testing.assert_close(cm(deep, skip), torch.relu(cm.up(up) / (1 + eps) ** 0.5))


def test_paper_hyper_parameters_are_the_defaults():
    """Loss weights 1 / 0.1 / 1 / 2 / 1 (code: ``hm + 0.1*wh + off``, ``+ 2*seg``, ``+ rend``); k = 3,
    beta = 0.75, N = HW // 8 (``rend_grids_sampling_train(..., k=3, beta=0.75)``, ``//8``); ROI
    enlargement 1.1, ROIs under 2 px skipped, 500 objects, head width 256, down ratio 4."""
    c = ModelConfig()
    assert (c.hm_weight, c.wh_weight, c.off_weight, c.seg_weight, c.point_weight) == (1.0, 0.1, 1.0, 2.0, 1.0)
    assert (c.k, c.beta, c.points_divisor) == (3.0, 0.75, 8)
    assert (c.roi_enlarge, c.min_roi_size, c.max_objects, c.head_width, c.down_ratio) == (1.1, 2.0, 500, 256, 4)
    assert c.backbone == "resnet50" and c.pretrained == "imagenet" and c.refine


def test_inference_output_does_not_depend_on_the_refinement_heads(r18):
    """The auxiliary refinement is training only (code: ``forward_seg_test`` never calls the point
    heads): changing them leaves every detection and ROI unchanged."""
    x = torch.randn(1, 3, 64, 64) * 0.3
    r18.eval()
    with torch.no_grad():
        r18.heads.wh[-1].bias.fill_(3.0)
        a = r18.detect(x, score_threshold=0.0, top_k=4)[0]
        saved = [p.clone() for p in (r18.seg.point_head0.weight, r18.seg.point_head1.weight)]
        r18.seg.point_head0.weight.normal_()
        r18.seg.point_head1.weight.normal_()
        b = r18.detect(x, score_threshold=0.0, top_k=4)[0]
        r18.seg.point_head0.weight.copy_(saved[0])
        r18.seg.point_head1.weight.copy_(saved[1])
        r18.heads.wh[-1].bias.zero_()
    assert len(a["rois"]) == 4
    for ra, rb in zip(a["rois"], b["rois"]):
        torch.testing.assert_close(ra, rb)


def test_imagenet_weights_are_torchvisions_v1_and_local_checkpoints_may_be_wrapped(monkeypatch, tmp_path):
    """The code loads ``resnet50-19c8e357.pth`` (torchvision's V1 ImageNet weights); we ask torchvision's
    weights API for ``IMAGENET1K_V1`` (no progress bar). A local checkpoint may hold its state under
    ``"state_dict"`` with DataParallel's ``module.`` prefix (as the code's ``save_model`` writes it)."""
    import torchvision

    from objguided.models.backbone import resnet_features

    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None).state_dict()
    calls = []

    class V1:
        @staticmethod
        def get_state_dict(**kwargs):
            calls.append(kwargs)
            return ref

    class Enum:
        IMAGENET1K_V1 = V1

    monkeypatch.setattr(torchvision.models, "get_model_weights", lambda name: calls.append(name) or Enum)
    feats = resnet_features("resnet18", "imagenet")
    assert calls == ["resnet18", {"progress": False}] and feats.weights_source == "imagenet"
    torch.testing.assert_close(feats.layer2[0].conv1.weight, ref["layer2.0.conv1.weight"])
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 99, "state_dict": {"module." + k: v for k, v in ref.items()}}, path)
    feats = resnet_features("resnet18", str(path))
    assert feats.weights_source == str(path)
    torch.testing.assert_close(feats.conv1.weight, ref["conv1.weight"])


def test_config_accepts_the_papers_settings_and_rejects_impossible_ones():
    """k > 0 and 0 < beta <= k (Table II's "uniform" is k = beta = 3; k = 1 is "uniform small"),
    N = HW // D with D >= 1; the three backbones of the project (ResNet-50 is the paper's)."""
    from objguided.models.config import ModelConfig as C

    for ok in ({"k": 1.0, "beta": 1.0}, {"k": 3.0, "beta": 3.0}, {"k": 0.5, "beta": 0.25}, {"points_divisor": 1},
               {"backbone": "resnet34"}, {"backbone": "resnet18"}):
        C(pretrained=None, **ok)
    for bad in ({"k": 0.0, "beta": 0.5}, {"k": -1.0, "beta": 0.5}, {"beta": 0.0}, {"k": 1.0, "beta": 1.5},
                {"points_divisor": 0}, {"backbone": "resnet101"}, {"down_ratio": 8}):
        with pytest.raises(ValueError):
            C(pretrained=None, **bad)


def test_combination_modules_default_to_batchnorm_and_heads_follow_head_width():
    """The detection decoder's combination modules are BatchNorm (the default norm); ``head_width``
    sets the hidden width of all three heads (256 in the paper)."""
    cm = CombinationModule(4, 3)
    assert isinstance(cm.up[1], nn.BatchNorm2d) and isinstance(cm.cat_conv[1], nn.BatchNorm2d)
    net = ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None, head_width=16))
    for name in ("hm", "wh", "reg"):
        assert getattr(net.heads, name)[0].out_channels == 16
    for dec in (net.dec_c2, net.dec_c3, net.dec_c4):
        assert isinstance(dec.up[1], nn.BatchNorm2d)


def test_a_checkpoint_that_does_not_fit_falls_back_to_random_init_with_one_warning(tmp_path, caplog):
    """Missing keys (or unexpected ones) mean the weights are not the backbone's: one warning, random
    init, ``weights_source == "random"`` (never a silently half-loaded backbone)."""
    import logging

    import torchvision

    from objguided.models.backbone import resnet_features

    state = torchvision.models.resnet18(weights=None).state_dict()
    missing = {k: v for k, v in state.items() if not k.startswith("layer4.1.")}
    extra = {**state, "layer5.weight": torch.zeros(1)}
    for i, bad in enumerate((missing, extra)):
        path = tmp_path / f"bad{i}.pth"
        torch.save(bad, path)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            feats = resnet_features("resnet18", str(path))
        assert feats.weights_source == "random"
        assert sum("training from scratch" in r.getMessage() for r in caplog.records) == 1
