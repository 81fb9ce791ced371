"""Decoding, ROI geometry, batched ROI inference and the refinement's point selection."""

import numpy as np
import pytest
import torch

from objguided.models.config import ModelConfig
from objguided.models.network import ObjGuidedNet, decode_heads
from objguided.models.refine import point_counts, point_sample, select_uncertain_points
from objguided.models.roi import (
    crop_group,
    crop_groups,
    crop_same_size,
    cxcywh_to_inclusive,
    group_rois,
    inclusive_to_cxcywh,
    roi_levels,
    sample_separable,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = ObjGuidedNet(ModelConfig(backbone="resnet18", pretrained=None))
    return n.eval()


def test_decode_offsets_scale_and_peak_nms():
    hm = torch.zeros(1, 1, 8, 8)
    hm[0, 0, 2, 3] = 0.9  # peak
    hm[0, 0, 2, 4] = 0.8  # its neighbour: suppressed by the 3x3 max-pool
    hm[0, 0, 6, 6] = 0.5
    hm[0, 0, 0, 7] = 0.2  # under the threshold
    wh = torch.zeros(1, 2, 8, 8)
    reg = torch.zeros(1, 2, 8, 8)
    wh[0, :, 2, 3] = torch.tensor([2.5, 1.25])
    reg[0, :, 2, 3] = torch.tensor([0.25, 0.5])
    wh[0, :, 6, 6] = torch.tensor([1.0, 3.0])
    d = decode_heads({"hm": hm, "wh": wh, "reg": reg}, score_threshold=0.3, top_k=10)[0]
    np.testing.assert_allclose(d["scores"], [0.9, 0.5])
    np.testing.assert_allclose(d["cxcywh"], [[4 * 3.25, 4 * 2.5, 10, 5], [24, 24, 4, 12]])
    assert decode_heads({"hm": hm, "wh": wh, "reg": reg}, 0.3, top_k=1)[0]["scores"].tolist() == [pytest.approx(0.9)]


def test_box_conventions_round_trip():
    b = np.array([[12, 8, 23, 17]], np.float32)
    c = inclusive_to_cxcywh(b)
    np.testing.assert_allclose(c, [[17.5, 12.5, 12, 10]])
    np.testing.assert_allclose(cxcywh_to_inclusive(c), b)


def test_roi_levels_sizes_and_stop_rule():
    lv = roi_levels([20, 20, 8, 8])
    assert [(x.gh, x.gw) for x in lv] == [(8, 8), (4, 4), (2, 2)]  # 8.8, 4.4, 2.2, then 1.1 < 2
    assert roi_levels([20, 20, 1.8, 10]) == []  # 1.98 < 2: the whole ROI is skipped
    lv = roi_levels([10, 10, 30, 6])
    assert [(x.gh, x.gw) for x in lv] == [(6, 33), (3, 16)]


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_crop_samples_the_right_coordinates_at_every_level(level):
    s = 2 ** level
    size = 256 // s
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    feat = torch.stack([xx, yy])  # channel 0 = x, channel 1 = y of each level pixel
    box = [100.0, 60.0, 64.0, 40.0]  # cx, cy, w, h in input pixels
    lv = roi_levels(box)[level]
    crop = crop_same_size(feat, [lv])[0]
    w_l, h_l = 1.1 * 64 / s, 1.1 * 40 / s
    assert crop.shape == (2, int(np.float32(h_l)), int(np.float32(w_l)))
    np.testing.assert_allclose(crop[0, 0], np.linspace(100 / s - w_l / 2, 100 / s + w_l / 2, crop.shape[2]), atol=1e-4)
    np.testing.assert_allclose(crop[1, :, 0], np.linspace(60 / s - h_l / 2, 60 / s + h_l / 2, crop.shape[1]), atol=1e-4)


def test_known_square_crops_to_its_pixels():
    m = torch.zeros(64, 64)
    m[20:30, 10:20] = 1  # x 10..19, y 20..29
    box = inclusive_to_cxcywh([[10, 20, 19, 29]])[0]
    lv = roi_levels(box)[0]  # 11 x 11 grid spanning x 9..20 (14.5 -+ 5.5)
    assert (lv.gh, lv.gw) == (11, 11)
    roi = crop_same_size(m[None], [lv])[0, 0]
    xs = lv.xs()
    prof = np.clip(np.minimum(xs - 9, 20 - xs), 0, 1)  # bilinear profile of a 10..19 step
    np.testing.assert_allclose(roi[5].numpy(), prof, atol=1e-5)
    np.testing.assert_allclose(roi.numpy(), np.outer(prof, prof), atol=1e-5)
    # the separable sampler used for targets gives the same numbers
    np.testing.assert_allclose(sample_separable(m, lv.xs(), lv.ys()).numpy(), roi.numpy(), atol=1e-5)


def test_batched_crop_equals_one_by_one():
    torch.manual_seed(1)
    feats = [torch.randn(2, 4, 64 // 2 ** i, 64 // 2 ** i) for i in range(5)]
    boxes = [np.array([[20, 20, 10, 10], [40, 30, 10, 10], [30, 30, 21, 7]], np.float32),
             np.array([[25, 40, 10, 10]], np.float32)]
    groups = group_rois(boxes, 1.1, 2.0, batch=True)
    # every group at once (one grid_sample per image and level) = one group at a time = one ROI at a time
    for (levels, members), together in zip(groups, crop_groups(feats, groups)):
        batched = crop_group(feats, levels, members)
        for k, (b, j) in enumerate(members):
            for lvl, (lt, lb) in enumerate(zip(together, batched)):
                single = crop_same_size(feats[lvl][b], [levels[k][lvl]])
                torch.testing.assert_close(lb[k:k + 1], single)
                torch.testing.assert_close(lt[k:k + 1], single)
    sizes = sorted(len(m) for _, m in group_rois(boxes, 1.1, 2.0, batch=True))
    assert sizes == [1, 3]


def test_batched_roi_inference_equals_one_by_one(net):
    x = torch.randn(1, 3, 64, 64) * 0.3
    out = net.forward(x)
    boxes = [np.array([[20, 20, 10, 10], [40, 30, 10, 10], [30, 44, 10, 10], [30, 30, 21, 7], [10, 50, 3, 3]],
                      np.float32)]
    res = {}
    for batch in (True, False):
        net.cfg.batch_rois = batch
        with torch.no_grad():
            for members, _, logits, _ in net._roi_groups(out["seg_feats"], boxes):
                for (b, j), lg in zip(members, logits):
                    res.setdefault(j, []).append(lg)
    net.cfg.batch_rois = True
    assert sorted(res) == [0, 1, 2, 3, 4]
    for j, (a, b) in res.items():
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert ((a > 0) == (b > 0)).all()


def test_detect_output_structure(net):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 64, 64) * 0.3
    with torch.no_grad():
        net.heads.wh[-1].bias.fill_(2.0)  # 8 px boxes
        dets = net.detect(x, score_threshold=0.0, top_k=4)
        net.heads.wh[-1].bias.zero_()
    for d in dets:
        n = len(d["scores"])
        assert n == 4 and d["boxes"].shape == (4, 4) and d["roi_boxes"].shape == (4, 4) and len(d["rois"]) == 4
        for roi, c, span in zip(d["rois"], d["cxcywh"], d["roi_boxes"]):
            assert roi.shape == (int(np.float32(c[3]) * np.float32(1.1)), int(np.float32(c[2]) * np.float32(1.1)))
            assert float(roi.min()) >= 0 and float(roi.max()) <= 1
            np.testing.assert_allclose(span[2] - span[0], 1.1 * c[2], rtol=1e-5)
        np.testing.assert_allclose(d["boxes"][:, 2] - d["boxes"][:, 0], d["cxcywh"][:, 2] - 1, rtol=1e-5)


def test_sparse_heads_detect_as_the_dense_heads(net):
    """On a CPU, detect() runs the size and offset heads at the peaks only: same detections as dense."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 96, 96) * 0.3
    res = {}
    with torch.no_grad():
        net.heads.wh[-1].bias.fill_(2.5)  # 10 px boxes, ROIs at every level
        net.SPARSE_MAX_COVER = float("inf")  # 60 peaks on a 24x24 map: force the sparse path anyway
        for sparse in (True, False):
            net.cfg.sparse_heads = sparse
            res[sparse] = net.detect(x, score_threshold=0.0, top_k=60)  # peaks at the map's borders too
        del net.SPARSE_MAX_COVER
        net.cfg.sparse_heads = True
        net.heads.wh[-1].bias.zero_()
    for a, b in zip(res[True], res[False]):
        assert len(a["scores"]) == len(b["scores"]) > 20
        torch.testing.assert_close(a["scores"], b["scores"])
        torch.testing.assert_close(a["cxcywh"], b["cxcywh"], rtol=1e-5, atol=1e-4)
        for ra, rb in zip(a["rois"], b["rois"]):
            if ra.shape == rb.shape:  # a size on an integer boundary may round the other way
                torch.testing.assert_close(ra, rb, rtol=1e-3, atol=1e-3)


def test_many_peaks_fall_back_to_the_dense_head(net, monkeypatch):
    """Past SPARSE_MAX_COVER of the map, gathering patches costs more than the dense conv: it runs instead."""
    import objguided.models.network as network

    calls = []
    monkeypatch.setattr(network, "head_at", lambda head, x, ind: calls.append(ind.numel()) or torch.zeros(2, 0))
    x = torch.randn(net.heads.wh[0].in_channels, 24, 24)
    few, many = torch.arange(5), torch.arange(200)  # 5 * 49 = 245 <= 288 < 200 * 49 cells of 576
    with torch.no_grad():
        net._head_at(net.heads.wh, x, few)
        dense = net._head_at(net.heads.wh, x, many)
    assert calls == [5] and dense.shape == (2, 200)


def test_head_at_equals_the_dense_head_everywhere():
    from objguided.models.layers import detection_head, head_at

    torch.manual_seed(5)
    for k1, k2 in ((7, 7), (3, 1)):
        head = detection_head(6, 16, 2, k1, k2)
        x = torch.randn(6, 13, 10)
        ind = torch.arange(13 * 10)  # every position: borders, corners, neighbours sharing hidden cells
        torch.testing.assert_close(head_at(head, x, ind, chunk=37), head(x[None])[0].reshape(2, -1),
                                   rtol=1e-4, atol=1e-5)
        assert head_at(head, x, ind[:0]).shape == (2, 0)


def test_point_counts():
    assert point_counts(16, 16, 3, 0.75, 8) == (96, 24)
    assert point_counts(5, 7, 3, 0.75, 8) == (12, 3)  # N = 35 // 8 = 4, floor(0.75 * 4) = 3
    assert point_counts(4, 4, 3, 0.75, 8) == (6, 1)


def test_points_are_the_most_uncertain_of_the_drawn():
    probs = torch.zeros(2, 1, 16, 16)
    probs[0, 0, :, :8] = 0.5  # left half maximally uncertain
    probs[1] = torch.rand(1, 16, 16)
    g = torch.Generator().manual_seed(5)
    pts = select_uncertain_points(probs, 3, 0.75, 8, generator=g)
    assert pts.shape == (2, 24, 2)
    g = torch.Generator().manual_seed(5)
    drawn = torch.rand((2, 96, 2), generator=g)
    u = point_sample(-(2 * probs - 1).abs(), drawn)[:, 0]
    for i in range(2):
        expect = drawn[i, u[i].topk(24).indices]
        assert sorted(map(tuple, expect.tolist())) == sorted(map(tuple, pts[i].tolist()))
        # nothing left behind is more uncertain than the least uncertain kept point
        kept_u = point_sample(-(2 * probs[i:i + 1] - 1).abs(), pts[i:i + 1])[0, 0]
        assert float(u[i].sort(descending=True).values[24]) <= float(kept_u.min()) + 1e-6
    assert (pts[0, :, 0] <= 8 / 15 + 1e-6).float().mean() > 0.9  # image 0: the uncertain left half
