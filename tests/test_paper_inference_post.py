"""Pins of the inference post-processing at its boundaries (issue 17's open mutants of postprocess.py).

What is pinned, and where it comes from (the authors' code @ 7d6ec9d,
github.com/yijingru/ObjGuided-Instance-Segmentation):

* ``post_proc.accumulate_votes`` ("Hough voting"): every ROI value votes into the four integer pixels
  around its grid point with bilinear weights; votes whose pixel lies outside the canvas are dropped
  (``good_inds``: 0 <= I < h, 0 <= J < w). The paper path divides by the accumulated weight (section
  III-D's weighted average; pixels without weight stay 0).
* ``affine_funcs.glue_back_masks``: ``constructed_mask >= seg_thresh`` (a value equal to the threshold
  is foreground).
* ``module.post_processing``: a detection whose mask has no pixel in the original image is skipped
  (``if rr.any()``) and the later detections are still processed; the code path resizes the 0/1 canvas
  with ``cv2.resize`` whose third positional argument is ``dst``, so bilinearly.
* ``nms.non_maximum_suppression_numpy_masks`` / ``calc_IoU``: the box pre-check ``w = x2 - x1``,
  ``h = y2 - y1``, ``if w <= 0 or h <= 0: return 0`` (no +1: two columns of overlap count); greedy by
  score, a mask goes when its IoU with the kept one is > 0.2, down to the last candidate.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from objguided.models.postprocess import PostConfig, _Cand, _iou, mask_nms, splat, to_instances
from objguided.models.preprocess import Frame


def _votes(roi: np.ndarray, span, shape) -> tuple[np.ndarray, np.ndarray]:
    """accumulate_votes, pixel by pixel: (sum of weighted votes, sum of weights), votes outside dropped."""
    h, w = roi.shape
    xs = np.linspace(span[0], span[2], w)
    ys = np.linspace(span[1], span[3], h)
    acc, wsum = np.zeros(shape), np.zeros(shape)
    for r in range(h):
        for c in range(w):
            x0, y0 = int(np.floor(xs[c])), int(np.floor(ys[r]))
            dx, dy = xs[c] - x0, ys[r] - y0
            for yy, xx, wt in ((y0, x0, (1 - dx) * (1 - dy)), (y0, x0 + 1, dx * (1 - dy)),
                               (y0 + 1, x0, (1 - dx) * dy), (y0 + 1, x0 + 1, dx * dy)):
                if 0 <= yy < shape[0] and 0 <= xx < shape[1]:
                    acc[yy, xx] += wt * roi[r, c]
                    wsum[yy, xx] += wt
    return acc, wsum


# ROI shape, grid span (x first, y first, x last, y last), canvas (H, W)
_SPLATS = {
    "starts_on_pixel_0": ((5, 6), (0.0, 0.0, 5.0, 4.0), (12, 12)),
    "crosses_left_top": ((7, 5), (-2.6, -3.3, 2.4, 3.1), (10, 14)),
    "crosses_right_bottom": ((6, 6), (8.2, 9.5, 13.7, 15.0), (12, 11)),
    "sparse_grid": ((3, 4), (2.3, 1.0, 11.9, 9.0), (16, 16)),
    "fully_left": ((4, 4), (-9.0, 2.0, -5.5, 5.0), (12, 12)),
    "fully_right": ((4, 4), (13.0, 2.0, 16.0, 5.0), (12, 12)),
}


@pytest.mark.parametrize("case", list(_SPLATS))
def test_splat_is_the_codes_hough_voting_with_outside_votes_dropped(case):
    """accumulate_votes on a non-square canvas given as (H, W), for grids starting on pixel 0, crossing
    each border, sparser than the pixels (pixels no vote reaches) or wholly outside; the ROI comes as the
    network's tensor (with grad). Normalised: votes / weights where a weight arrived, 0 elsewhere."""
    shape, span, canvas = _SPLATS[case]
    roi = np.random.default_rng(len(case)).uniform(0.05, 1.0, shape)
    acc, wsum = _votes(roi, span, canvas)
    t = torch.tensor(roi, requires_grad=True)
    raw = splat(t, torch.tensor(span, dtype=torch.float64), canvas, normalise=False)
    np.testing.assert_allclose(raw, acc, rtol=1e-12, atol=1e-12)
    norm = splat(t, span, canvas, normalise=True)
    want = np.divide(acc, wsum, out=np.zeros(canvas), where=wsum > 0)
    np.testing.assert_allclose(norm, want, rtol=1e-12, atol=1e-12)
    if case == "sparse_grid":
        assert (wsum == 0).any()  # the case has pixels no vote reaches: they stay 0, not NaN
    if case.startswith("fully"):
        assert not raw.any() and not norm.any()


def _rect_cand(x1, y1, x2, y2, score=0.5, value=None) -> _Cand:
    h, w = y2 - y1 + 1, x2 - x1 + 1
    crop = np.ones((h, w), bool) if value is None else np.full((h, w), value)
    return _Cand((x1, y1, x2, y2), crop, score)


def test_code_iou_counts_an_overlap_two_pixels_wide_and_drops_one_pixel_wide():
    """calc_IoU's pre-check has no +1: x2 - x1 == 1 (two shared columns) is an overlap, == 0 is not;
    likewise for rows."""
    a = _rect_cand(0, 0, 9, 9, value=0.8)
    for b in (_rect_cand(8, 0, 17, 9, value=0.6), _rect_cand(0, 8, 9, 17, value=0.6)):
        inter = 2 * 10 * 0.8 * 0.6
        want = inter / (a.crop.sum() + b.crop.sum() - inter + 1e-6)
        assert _iou(a, b, code=True) == pytest.approx(want, rel=1e-12)
    for b in (_rect_cand(9, 0, 18, 9, value=0.6), _rect_cand(0, 9, 9, 18, value=0.6)):
        assert _iou(a, b, code=True) == 0.0


def test_paper_iou_of_masks_sharing_one_column_or_row_or_one_pixel():
    """The paper path's IoU is the masks' own: one shared column (10 px of 190) is an overlap, and two
    equal one-pixel masks have IoU 1."""
    a = _rect_cand(0, 0, 9, 9)
    assert _iou(a, _rect_cand(9, 0, 18, 9), code=False) == pytest.approx(10 / 190)
    assert _iou(a, _rect_cand(0, 9, 9, 18), code=False) == pytest.approx(10 / 190)
    assert _iou(_rect_cand(4, 4, 4, 4), _rect_cand(4, 4, 4, 4), code=False) == 1.0


@pytest.mark.parametrize("box", [(0, 20, 5, 30), (20, 0, 30, 5), (7, 3, 7, 12), (3, 7, 12, 7), (4, 4, 4, 4)],
                         ids=["tall", "wide", "column", "row", "pixel"])
def test_mask_nms_suppresses_the_last_duplicate_whatever_its_box(box):
    """Two equal masks: the second (lower score) goes, also when it is the last candidate left, for
    boxes taller than wide, wider than tall, one column, one row or one pixel."""
    cands = [_rect_cand(*box, score=0.8), _rect_cand(*box, score=0.9)]
    assert mask_nms(cands, 0.2, code=False) == [1]
    if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:  # the code's pre-check sees an overlap
        soft = [_rect_cand(*box, score=0.8, value=0.7), _rect_cand(*box, score=0.9, value=0.7)]
        assert mask_nms(soft, 0.2, code=True) == [1]


def _square_roi(size: int, value: float = 1.0) -> torch.Tensor:
    return torch.full((size, size), value, dtype=torch.float64)


def _det(rois, spans, scores) -> dict:
    return {"scores": torch.tensor(scores), "rois": rois, "roi_boxes": torch.tensor(spans, dtype=torch.float64)}


@pytest.mark.parametrize("faithful_to", ["paper", "code"])
def test_a_detection_without_a_mask_does_not_end_the_image(faithful_to):
    """A first detection below the threshold, a second whose one-pixel mask holds no original pixel
    centre (16 x 16 image at 64: original centres at input 2, 6, ...; the code's bilinear values < 1),
    then a real one: the real one is still returned (the code's ``continue``)."""
    f = Frame.stretch(16, 16, 64)
    rois = [_square_roi(8, 0.2), torch.ones((1, 1), dtype=torch.float64), _square_roi(8)]
    spans = [(8.0, 8.0, 15.0, 15.0), (0.0, 0.0, 0.0, 0.0), (24.0, 24.0, 31.0, 31.0)]
    inst = to_instances(_det(rois, spans, [0.9, 0.8, 0.7]), f, PostConfig(faithful_to))
    assert [s for _, s, _ in inst] == pytest.approx([0.7])
    want = np.zeros((16, 16), bool)
    want[6:8, 6:8] = True  # input 24..31 -> original 6..7
    np.testing.assert_array_equal(inst[0][0], want)


@pytest.mark.parametrize("faithful_to", ["paper", "code"])
def test_probability_equal_to_the_threshold_is_foreground(faithful_to):
    """glue_back_masks keeps ``>= seg_thresh``: an integer-aligned ROI of exactly 0.5 (each pixel one
    vote of weight 1) is the whole square on both paths."""
    f = Frame.stretch(64, 64, 64)
    (mask, _, soft), = to_instances(_det([_square_roi(8, 0.5)], [(10.0, 20.0, 17.0, 27.0)], [0.9]), f,
                                    PostConfig(faithful_to))
    want = np.zeros((64, 64), bool)
    want[20:28, 10:18] = True
    np.testing.assert_array_equal(mask, want)
    assert soft == (64.0 if faithful_to == "code" else None)


def test_paper_path_normalises_the_votes_so_a_small_object_has_no_holes():
    """A 5 x 5 all-ones ROI spread over 7 x 7 pixels (grid step 1.5): the raw votes fall under 0.5 inside
    (the code's holes, section III-D's motivation for the weighted average), the paper path's mask is
    the square."""
    f = Frame.stretch(64, 64, 64)
    det = _det([_square_roi(5)], [(30.0, 20.0, 36.0, 26.0)], [0.9])
    raw = splat(det["rois"][0], det["roi_boxes"][0], 64, normalise=False)
    assert (raw[20:27, 30:37] < 0.5).any()
    (mask, _, _), = to_instances(det, f, PostConfig("paper"))
    want = np.zeros((64, 64), bool)
    want[20:27, 30:37] = True
    np.testing.assert_array_equal(mask, want)


def test_code_path_resizes_the_canvas_bilinearly():
    """The code's cv2.resize(canvas, (w, h), INTER_NEAREST) is bilinear (the flag sits in ``dst``): on a
    64 -> 40 x 50 downscale of an L-shaped object the soft crop is F.interpolate's bilinear resize of the
    0/1 canvas cut to the box of its pixels equal to 1, with fractional values along the inner corner."""
    f = Frame.stretch(40, 50, 64)
    roi = torch.zeros((20, 20), dtype=torch.float64)
    roi[:, :6] = 1.0
    roi[14:, :] = 1.0
    det = _det([roi], [(11.0, 13.0, 30.0, 32.0)], [0.9])
    (mask, _, soft), = to_instances(det, f, PostConfig("code"))
    canvas = np.zeros((64, 64))
    canvas[13:33, 11:31] = roi.numpy()
    full = F.interpolate(torch.as_tensor(canvas)[None, None], size=(40, 50), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    ys, xs = np.nonzero(full >= 1 - 1e-9)
    crop = full[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert soft == pytest.approx(crop.sum(), rel=1e-12) and soft != round(soft)
    want = np.zeros((40, 50), bool)
    want[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = crop > 0
    np.testing.assert_array_equal(mask, want)
