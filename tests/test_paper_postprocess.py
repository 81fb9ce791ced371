"""Pins of the mask NMS of the paper's inference (greedy by score, suppress when mask IoU > 0.2) and of
the authors' code's IoU (``nms.calc_IoU`` @ 7d6ec9d: a box pre-check without +1, ``w = x2 - x1``,
``if w <= 0 or h <= 0: return 0``, then sum of products / (sum a + sum b - inter + 1e-6) on the crops
placed in their union box). Every expected IoU is computed on a full canvas, independently of the crop
arithmetic under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from objguided.models.postprocess import _Cand, _iou, mask_nms


def _cand(mask: np.ndarray, score=0.5, soft: np.ndarray | None = None) -> _Cand:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y1, y2, x1, x2 = rows[0], rows[-1], cols[0], cols[-1]
    values = mask if soft is None else soft
    return _Cand((int(x1), int(y1), int(x2), int(y2)), values[y1:y2 + 1, x1:x2 + 1].copy(), score)


def _canvas_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def _rect(h, w, y1, x1, y2, x2):
    m = np.zeros((h, w), bool)
    m[y1:y2 + 1, x1:x2 + 1] = True
    return m


def test_binary_mask_iou_is_the_exact_iou_of_the_masks():
    """Boxes of different widths and heights, offset on both axes, with holes: the paper path's IoU is
    |A and B| / |A or B| of the masks themselves."""
    rng = np.random.default_rng(0)
    h, w = 40, 50
    for k in range(12):
        y1, x1 = rng.integers(0, 15, 2)
        a = _rect(h, w, y1, x1, y1 + rng.integers(4, 20), x1 + rng.integers(4, 30))
        y1, x1 = rng.integers(0, 15, 2)
        b = _rect(h, w, y1, x1, y1 + rng.integers(4, 20), x1 + rng.integers(4, 30))
        a &= rng.random((h, w)) > 0.15  # holes (the box stays the first/last rows and columns hit)
        b &= rng.random((h, w)) > 0.15
        ca, cb = _cand(a), _cand(b)
        a_in = np.zeros_like(a)
        b_in = np.zeros_like(b)
        a_in[ca.box[1]:ca.box[3] + 1, ca.box[0]:ca.box[2] + 1] = ca.crop
        b_in[cb.box[1]:cb.box[3] + 1, cb.box[0]:cb.box[2] + 1] = cb.crop
        want = _canvas_iou(a_in, b_in)
        assert _iou(ca, cb, code=False) == pytest.approx(want, abs=1e-12), k
        assert _iou(cb, ca, code=False) == pytest.approx(want, abs=1e-12), k
    far = _cand(_rect(h, w, 0, 0, 5, 5)), _cand(_rect(h, w, 20, 30, 25, 40))
    assert _iou(*far, code=False) == 0.0


def test_code_iou_is_the_soft_overlap_with_the_authors_box_precheck():
    """Soft crops: inter = sum(a * b), union = sum a + sum b - inter, IoU = inter / (union + 1e-6); boxes
    sharing a single column or row (x2 - x1 == 0 without +1) count as disjoint, as in the code."""
    h, w = 30, 30
    a = _rect(h, w, 5, 4, 14, 12)
    soft_a = np.where(a, np.linspace(0.3, 1.0, w)[None, :], 0.0)
    for x1b, y1b in ((8, 9), (12, 9), (11, 14), (13, 9)):
        b = _rect(h, w, y1b, x1b, y1b + 8, x1b + 6)
        soft_b = np.where(b, np.linspace(1.0, 0.5, h)[:, None], 0.0)
        ca, cb = _cand(a, soft=soft_a), _cand(b, soft=soft_b)
        ix1, ix2 = max(4, x1b), min(12, x1b + 6)
        iy1, iy2 = max(5, y1b), min(14, y1b + 8)
        if ix2 - ix1 <= 0 or iy2 - iy1 <= 0:
            want = 0.0
        else:
            inter = float((soft_a * soft_b).sum())
            want = inter / (soft_a.sum() + soft_b.sum() - inter + 1e-6)
        got = _iou(ca, cb, code=True)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), (x1b, y1b)
        if (x1b, y1b) in ((12, 9), (11, 14)):  # one shared column / row: the masks do overlap, the code says 0
            assert got == 0.0 and (a & b).any()


def test_mask_nms_keeps_by_descending_score_and_suppresses_iou_above_0_2_only():
    """Greedy: the best first; a mask goes when its IoU with a kept one is > 0.2 (0.2 itself stays);
    suppressed masks suppress nothing; equal scores keep their input order."""
    h, w = 20, 40
    base = _rect(h, w, 0, 0, 9, 9)  # 100 px
    exactly = _rect(h, w, 0, 0, 1, 9)  # 20 px inside base: IoU 20 / 100 = 0.2 exactly
    exactly_iou = _canvas_iou(base, exactly)
    assert exactly_iou == pytest.approx(0.2)
    over = _rect(h, w, 0, 3, 9, 12)  # IoU 70 / 130 with base
    chain = _rect(h, w, 0, 9, 9, 18)  # overlaps `over` (IoU > 0.2) but base only by one column (10/190)
    apart = _rect(h, w, 10, 25, 19, 34)
    cands = [_cand(over, 0.8), _cand(base, 0.9), _cand(exactly, 0.5), _cand(chain, 0.7), _cand(apart, 0.7)]
    keep = mask_nms(cands, 0.2, code=False)
    # base (0.9) kills over (0.8); chain survives (IoU with base 10/190) and is kept; apart ties with chain
    assert keep == [1, 3, 4, 2]
    assert mask_nms(cands[:1], 0.2, code=False) == [0] and mask_nms([], 0.2, code=False) == []
