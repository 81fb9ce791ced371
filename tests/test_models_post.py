"""Pre-processing frames, splatting and both post-processing paths (docs/method.md, docs/protocol.md)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from objguided.models.postprocess import PostConfig, splat, to_instances
from objguided.models.preprocess import Frame, prepare
from objguided.models.roi import inclusive_to_cxcywh, roi_levels, sample_separable


def _perfect_roi(mask_in: np.ndarray, box_inclusive):
    """The ROI a perfect network outputs: the input-frame mask sampled bilinearly on the ROI grid."""
    lv = roi_levels(inclusive_to_cxcywh([box_inclusive])[0])[0]
    roi = sample_separable(torch.as_tensor(mask_in, dtype=torch.float32), lv.xs(), lv.ys())
    return roi, lv.span()


def _square(size, y1, x1, y2, x2):
    m = np.zeros((size, size), bool)
    m[y1:y2 + 1, x1:x2 + 1] = True
    return m


# ------------------------------------------------------------------------------------------ splat

def test_all_ones_roi_coverage_matches_reference_numbers():
    # docs/method.md: min interior canvas value of unnormalised splatting ~0.28 (w=4), 0.55 (8), 0.81 (10-16)
    for w, expect in ((4, 0.28), (8, 0.55), (10, 0.81), (16, 0.81)):
        lv = roi_levels([20 + (w - 1) / 2, 20 + (w - 1) / 2, w, w])[0]
        c = splat(np.ones((lv.gh, lv.gw)), lv.span(), 64, normalise=False)
        assert c[20:20 + w, 20:20 + w].min() == pytest.approx(expect, abs=0.006)
        n = splat(np.ones((lv.gh, lv.gw)), lv.span(), 64, normalise=True)
        assert n[20:20 + w, 20:20 + w].min() == pytest.approx(1.0)


def test_perfect_6px_roi_normalised_has_no_holes_unnormalised_does():
    m = _square(64, 20, 30, 25, 35)  # 6 x 6 px
    roi, span = _perfect_roi(m, (30, 20, 35, 25))
    assert roi.shape == (6, 6)
    norm = splat(roi, span, 64, normalise=True)
    raw = splat(roi, span, 64, normalise=False)
    assert ((norm >= 0.5) == m).all()  # exactly the square
    for thr in (0.5, 0.53):
        holes = m & (raw < thr)
        assert holes.sum() > 0 and not (~m & (raw >= thr)).any()
    # the normalised canvas is a weighted mean of ROI values, the raw one a weighted sum
    assert norm.max() <= 1 + 1e-12 and raw[m].min() < 0.5


def test_splat_drops_votes_outside_the_canvas():
    c = splat(np.ones((4, 4)), (-2.0, -2.0, 1.0, 1.0), 8, normalise=False)
    assert c.shape == (8, 8) and c[:3, :3].sum() > 0 and c[3:, :].sum() == 0


# ----------------------------------------------------------------------------------------- frames

def test_prepare_letterbox_and_stretch():
    img = np.full((30, 60), 255, np.uint8)
    x, f = prepare(img, 64, "letterbox")
    assert x.shape == (3, 64, 64) and f.scale_x == f.scale_y == 64 / 60 and f.pad_y == 15 and f.pad_x == 0
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert float(x[0, 0, 0]) == -0.5 and float(x[0, 63, 0]) == -0.5  # black bands
    assert float(x[0, 32, 32]) == pytest.approx(0.5)
    x, f = prepare(img, 64, "stretch")
    assert (f.scale_x, f.scale_y, f.pad_x, f.pad_y) == (64 / 60, 64 / 30, 0, 0)
    assert float(x.min()) == pytest.approx(0.5)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    x, _ = prepare(rgb, 8, "stretch", bgr=True)
    assert float(x[2].mean()) == pytest.approx(0.5) and float(x[0].mean()) == pytest.approx(-0.5)


def test_letterbox_round_trip_exact_scale():
    lab = np.zeros((24, 32), np.int32)  # H 24, W 32 -> side 32, S 64: scale 2, pad_y 4 px
    lab[3:7, 5:12] = 1
    lab[20:24, 0:3] = 2
    f = Frame.letterbox(24, 32, 64)
    inp = f.labels_to_input(lab)
    assert (inp[:8] == 0).all() and (inp[56:] == 0).all()
    assert inp[8 + 6, 10] == 1 and inp[8 + 5, 10] == 0  # original row 3 -> input rows 14, 15
    back = f.input_to_orig(inp.astype(float), "nearest")
    np.testing.assert_array_equal(back, lab)


def test_stretch_mask_maps_back_to_the_right_pixels():
    f = Frame.stretch(30, 40, 64)  # scale_x 1.6, scale_y 64/30
    m = np.zeros((64, 64))
    m[10:20, 16:32] = 1  # input cols 16..31, rows 10..19
    back = f.input_to_orig(m, "nearest") > 0.5
    xs = np.flatnonzero(back.any(0))
    ys = np.flatnonzero(back.any(1))
    # original x whose centre (x + 0.5) * 1.6 lies in [16, 32): x in 10..19; y: (y + 0.5) * 64/30 in [10, 20): 5..8
    assert xs.tolist() == list(range(10, 20)) and ys.tolist() == list(range(5, 9))


def test_bilinear_window_matches_interpolate():
    rng = np.random.default_rng(0)
    canvas = np.zeros((64, 64))
    canvas[20:30, 12:40] = rng.random((10, 28))
    for h, w in ((30, 40), (100, 90), (64, 64)):
        f = Frame.stretch(h, w, 64)
        ref = F.interpolate(torch.as_tensor(canvas)[None, None], size=(h, w), mode="bilinear",
                            align_corners=False)[0, 0]
        np.testing.assert_allclose(f.input_to_orig(canvas, "bilinear"), ref.numpy(), atol=1e-12)
        win, y0, x0 = f.window_to_orig(canvas[20:30, 12:40], 20, 12, "bilinear")
        full = np.zeros((h, w))
        full[y0:y0 + win.shape[0], x0:x0 + win.shape[1]] = win
        np.testing.assert_allclose(full, ref.numpy(), atol=1e-12)


# ----------------------------------------------------------------------------------- to_instances

def _detections(frame, objects, scores):
    rois, spans = [], []
    for y1, x1, y2, x2 in objects:
        m = _square(frame.size, y1, x1, y2, x2)
        roi, span = _perfect_roi(m, (x1, y1, x2, y2))
        rois.append(roi)
        spans.append(span)
    return {"scores": torch.tensor(scores), "rois": rois, "roi_boxes": torch.tensor(spans, dtype=torch.float64)}


def test_to_instances_paper_binary_masks_and_nms():
    f = Frame.letterbox(32, 32, 64)  # exact 2x
    objs = [(10, 12, 19, 23), (40, 40, 53, 47), (10, 12, 19, 23)]  # the third duplicates the first
    det = _detections(f, objs, [0.9, 0.8, 0.7])
    inst = to_instances(det, f, PostConfig("paper"))
    assert [s for _, s, _ in inst] == pytest.approx([0.9, 0.8])
    assert all(a is None for _, _, a in inst)
    m0, m1 = inst[0][0], inst[1][0]
    assert m0.dtype == bool and m0.shape == (32, 32)
    np.testing.assert_array_equal(m0, _square(32, 5, 6, 9, 11))
    np.testing.assert_array_equal(m1, _square(32, 20, 20, 26, 23))
    # a 20% overlap threshold is strict (>): a shifted copy with IoU well under 0.2 survives
    det2 = _detections(f, [(10, 12, 19, 23), (10, 20, 19, 31)], [0.9, 0.8])
    assert len(to_instances(det2, f, PostConfig("paper"))) == 2


def test_to_instances_code_soft_masks():
    f = Frame.stretch(30, 40, 64)
    objs = [(10, 12, 29, 35), (40, 40, 55, 52), (10, 12, 29, 35), (2, 50, 5, 53)]
    det = _detections(f, objs, [0.9, 0.8, 0.7, 0.6])
    inst = to_instances(det, f, PostConfig("code"))
    assert PostConfig("code").thr == 0.5 and PostConfig("paper").thr == 0.5  # the README evaluates at 0.5
    # the duplicate is suppressed; the 4 px object vanishes (raw canvas values <= 0.28 < 0.5)
    assert len(inst) == 2 and [s for _, s, _ in inst] == pytest.approx([0.9, 0.8])
    assert len(to_instances(det, f, PostConfig("paper"))) == 3  # the normalised path keeps it
    for k, (mask, score, soft) in enumerate(inst):
        assert mask.shape == (30, 40) and mask.dtype == bool
        assert soft is not None and 0 < soft <= mask.sum()
        # reproduce it from the full canvas: raw splat, threshold, bilinear resize, box of == 1 pixels
        i = [0, 1][k]
        canvas = splat(det["rois"][i], det["roi_boxes"][i], 64, normalise=False) >= 0.5
        full = f.input_to_orig(canvas.astype(float), "bilinear")
        ys, xs = np.nonzero(full >= 1 - 1e-9)
        crop = full[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        expect = np.zeros((30, 40), bool)
        expect[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = crop > 0
        np.testing.assert_array_equal(mask, expect)
        assert soft == pytest.approx(crop.sum())
        assert soft <= mask.sum()


def test_code_path_soft_area_of_a_disc_is_fractional():
    f = Frame.stretch(40, 48, 64)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 <= 12 ** 2
    roi, span = _perfect_roi(disc, (18, 18, 42, 42))
    det = {"scores": torch.tensor([0.9]), "rois": [roi], "roi_boxes": torch.tensor([span], dtype=torch.float64)}
    (mask, _, soft), = to_instances(det, f, PostConfig("code"))
    assert 0 < soft < mask.sum()  # support counts pixels > 0; soft_area sums their fractional values
    (pmask, _, psoft), = to_instances(det, f, PostConfig("paper"))
    assert psoft is None and pmask.sum() <= mask.sum()


def test_to_instances_drops_empty_masks():
    f = Frame.letterbox(64, 64, 64)
    det = {"scores": torch.tensor([0.9]), "rois": [torch.full((5, 5), 0.1)],
           "roi_boxes": torch.tensor([[10.0, 10.0, 15.0, 15.0]], dtype=torch.float64)}
    assert to_instances(det, f, PostConfig("paper")) == []
    assert to_instances(det, f, PostConfig("code")) == []
