"""The AP protocol against an independent brute-force implementation (plain loops, its own boxes, IoU,
matching and VOC AP), on random instance sets: ties in scores, tiny objects, overlapping predictions,
empty images, images without GT, non-contiguous label ids; both box conventions, both mask IoU modes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from objguided.metrics import ap

THRESHOLDS = list(np.linspace(0.5, 0.95, 10))


# ----------------------------------------------------------------------------- brute force

def bf_box(mask):
    rows = [r for r in range(mask.shape[0]) if mask[r].any()]
    cols = [c for c in range(mask.shape[1]) if mask[:, c].any()]
    return min(cols), min(rows), max(cols), max(rows)


def bf_box_area_inter(a, b, extra):
    ax1, ay1, ax2, ay2 = a[0], a[1], a[2] + extra, a[3] + extra
    bx1, by1, bx2, by2 = b[0], b[1], b[2] + extra, b[3] + extra
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    inter = max(0, iw) * max(0, ih)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    union = area_a + area_b - inter
    return (inter / union if union > 0 else 0.0), inter


def bf_image(labels, masks, scores, softs, extra, soft_mode):
    """Per image: list (in input order) of (seg TP flags per t, dec TP flags per t); n kept GT."""
    objs = []
    for lab in range(1, int(labels.max()) + 1 if labels.size else 1):
        m = labels == lab
        if not m.any():
            continue
        box = bf_box(m)
        if box[2] - box[0] <= 1 or box[3] - box[1] <= 1:
            continue  # dropped
        objs.append((m, box))
    order = sorted(range(len(masks)), key=lambda i: -scores[i])  # Python's sort is stable
    result = {i: ([False] * 10, [False] * 10) for i in range(len(masks))}
    for ti, t in enumerate(THRESHOLDS):
        taken_seg, taken_dec = set(), set()
        for i in order:
            pm = masks[i]
            pbox = bf_box(pm)
            parea = softs[i] if (soft_mode and softs[i] is not None) else int(pm.sum())
            # masks
            best, best_iou = None, None
            for g, (gm, gbox) in enumerate(objs):
                _, binter = bf_box_area_inter(pbox, gbox, extra)
                if binter <= 0:
                    continue
                inter = int((pm & gm).sum())
                iou = inter / (parea + int(gm.sum()) - inter)
                if best is None or iou > best_iou:
                    best, best_iou = g, iou
            if best is not None and best not in taken_seg and best_iou > t:
                taken_seg.add(best)
                result[i][0][ti] = True
            # boxes
            best, best_iou = None, None
            for g, (gm, gbox) in enumerate(objs):
                iou, _ = bf_box_area_inter(pbox, gbox, extra)
                if best is None or iou > best_iou:
                    best, best_iou = g, iou
            if best is not None and best not in taken_dec and best_iou >= t:
                taken_dec.add(best)
                result[i][1][ti] = True
    return result, len(objs)


def bf_voc(flags, n_gt):
    if not flags or n_gt == 0:
        return 0.0
    tp = fp = 0
    rec, prec = [], []
    for f in flags:
        tp += f
        fp += not f
        rec.append(tp / n_gt)
        prec.append(tp / max(tp + fp, np.finfo(np.float64).eps))
    mrec = [0.0] + rec + [1.0]
    mpre = [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def brute_force(gt_labels, pred_masks, pred_scores, soft_areas=None, box_convention="inclusive",
                mask_iou_mode="binary"):
    extra = {"inclusive": 0, "pixel_extent": 1}[box_convention]
    pooled = []  # (score, image, index, seg flags, dec flags)
    n_gt = 0
    for k, (labels, masks, scores) in enumerate(zip(gt_labels, pred_masks, pred_scores)):
        softs = soft_areas[k] if soft_areas is not None else [None] * len(masks)
        res, n = bf_image(labels, masks, scores, softs, extra, mask_iou_mode == "soft_area")
        n_gt += n
        for i in range(len(masks)):
            pooled.append((scores[i], k, i, res[i][0], res[i][1]))
    pooled.sort(key=lambda p: -p[0])  # stable: image order, then order within the image
    ap_seg = [bf_voc([p[3][t] for p in pooled], n_gt) for t in range(10)]
    ap_dec = [bf_voc([p[4][t] for p in pooled], n_gt) for t in range(10)]
    return {"ap_seg": ap_seg, "ap_dec": ap_dec, "n_gt": n_gt,
            "tp_seg": [sum(p[3][t] for p in pooled) for t in range(10)],
            "tp_dec": [sum(p[4][t] for p in pooled) for t in range(10)]}


# ----------------------------------------------------------------------------- random cases

def random_image(rng, h=None, w=None):
    h = h or int(rng.integers(6, 40))
    w = w or int(rng.integers(6, 40))
    labels = np.zeros((h, w), np.int32)
    n_obj = int(rng.choice([0, 0, 1, 2, 3, 5, 8]))
    ids = rng.permutation(np.arange(1, 3 * n_obj + 2))[:n_obj]  # non-contiguous, unordered ids
    for lab in ids:
        kind = rng.random()
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        if kind < 0.15:  # tiny: 1-2 px in one direction
            hh, ww = (int(rng.integers(1, 3)), int(rng.integers(1, 8))) if rng.random() < .5 else \
                     (int(rng.integers(1, 8)), int(rng.integers(1, 3)))
            labels[y:y + hh, x:x + ww] = lab
        elif kind < 0.6:
            labels[y:y + int(rng.integers(2, 12)), x:x + int(rng.integers(2, 12))] = lab
        else:
            ry, rx = int(rng.integers(1, 7)), int(rng.integers(1, 7))
            yy, xx = np.mgrid[:h, :w]
            labels[((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= 1] = lab
    return labels


def random_predictions(rng, labels):
    h, w = labels.shape
    masks = []
    present = [i for i in np.unique(labels) if i]
    for lab in present:
        m = labels == lab
        for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
            u = rng.random()
            p = m.copy()
            if u < 0.3:
                p = np.roll(p, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
            elif u < 0.6:
                p &= rng.random(p.shape) < 0.85
            elif u < 0.8:
                p |= np.roll(p, 1, axis=int(rng.integers(0, 2)))
            if p.any():
                masks.append(p)
    for _ in range(int(rng.integers(0, 3))):  # false positives / merges
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        p = np.zeros((h, w), bool)
        p[y:y + int(rng.integers(1, 10)), x:x + int(rng.integers(1, 10))] = True
        masks.append(p)
    order = rng.permutation(len(masks))
    masks = [masks[i] for i in order]
    scores = [float(rng.integers(0, 6)) / 5 for _ in masks]  # many ties
    softs = [None if rng.random() < 0.3 else float(m.sum()) * float(rng.uniform(0.3, 1.0)) for m in masks]
    return masks, scores, softs


def random_case(seed):
    rng = np.random.default_rng(seed)
    n_img = int(rng.integers(1, 5))
    gts, preds, scores, softs = [], [], [], []
    for _ in range(n_img):
        labels = random_image(rng)
        m, s, so = random_predictions(rng, labels)
        if rng.random() < 0.15:
            m, s, so = [], [], []
        gts.append(labels)
        preds.append(m)
        scores.append(s)
        softs.append(so)
    return gts, preds, scores, softs


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("box_convention", ["inclusive", "pixel_extent"])
@pytest.mark.parametrize("mask_iou_mode", ["binary", "soft_area"])
def test_against_brute_force(box_convention, mask_iou_mode):
    for seed in range(150):
        gts, preds, scores, softs = random_case(seed)
        ours = ap.evaluate(gts, preds, scores, soft_areas=softs, box_convention=box_convention,
                           mask_iou_mode=mask_iou_mode)
        ref = brute_force(gts, preds, scores, softs, box_convention, mask_iou_mode)
        assert ours["gt_kept"] == ref["n_gt"], seed
        np.testing.assert_allclose(ours["ap_seg"], ref["ap_seg"], rtol=0, atol=1e-9, err_msg=f"seed {seed}")
        np.testing.assert_allclose(ours["ap_dec"], ref["ap_dec"], rtol=0, atol=1e-9, err_msg=f"seed {seed}")
        assert ours["tp_seg"].sum(axis=1).tolist() == ref["tp_seg"], seed
        assert ours["tp_dec"].sum(axis=1).tolist() == ref["tp_dec"], seed


def test_brute_force_is_not_trivial():
    """The random cases exercise what they should: TPs, FPs, drops, ties, empty images."""
    tps = aps = drops = empty = 0
    for seed in range(150):
        gts, preds, scores, softs = random_case(seed)
        r = ap.evaluate(gts, preds, scores)
        tps += int(r["tp_seg"].sum())
        aps += any(0 < v < 1 for v in r["ap_seg"])
        drops += r["gt_dropped"]
        empty += sum(len(p) == 0 for p in preds) + sum(int(g.max()) == 0 for g in gts)
    assert tps > 100 and aps > 30 and drops > 10 and empty > 10


def test_thresholds_are_numpys():
    assert ap.DEFAULT_THRESHOLDS.tolist() == np.linspace(0.5, 0.95, 10).tolist()
    assert ap.DEFAULT_THRESHOLDS[8] == 0.8999999999999999


def test_soft_area_iou_the_codes_way():
    """IoU = |support & GT| / (soft sum + |GT| - |support & GT|), on a hand-made soft mask."""
    gt = np.zeros((8, 8), np.int32)
    gt[1:6, 1:6] = 1  # 25 px
    soft = np.zeros((8, 8))
    soft[2:7, 2:7] = 0.6  # support 25 px, 16 of them inside GT
    soft[3:5, 3:5] = 1.0
    support = soft > 0
    soft_sum = float(soft[support].sum())  # 21 * 0.6 + 4 * 1.0 = 16.6
    inter = int((support & (gt == 1)).sum())
    assert inter == 16 and math.isclose(soft_sum, 16.6)
    expected = inter / (soft_sum + 25 - inter)
    r = ap.evaluate([gt], [[support]], [[0.9]], soft_areas=[[soft_sum]], mask_iou_mode="soft_area")
    assert r["iou_seg"][0] == expected
    r_bin = ap.evaluate([gt], [[support]], [[0.9]], soft_areas=[[soft_sum]], mask_iou_mode="binary")
    assert r_bin["iou_seg"][0] == 16 / (25 + 25 - 16)


def test_no_fallback_to_second_best():
    """A prediction whose best object is taken is a FP even when another object would pass (boxes)."""
    gt = np.zeros((12, 12), np.int32)
    gt[0, 0:10] = 1
    gt[0:10, 0] = 1  # an L: box [0, 0, 9, 9]
    gt[9, 1:10] = 2
    gt[1:10, 9] = 2  # the other L: box [1, 1, 9, 9], box IoU 64/81 with the first
    p = gt == 1
    r = ap.evaluate([gt], [[p, p.copy()]], [[0.9, 0.8]])
    assert r["iou_dec"] == [1.0, 1.0]
    assert r["tp_dec"][0].tolist() == [True, False]  # no fall-back to object 2 (IoU 0.79 >= 0.5)
    assert r["tp_seg"][0].tolist() == [True, False]


def test_mask_candidates_need_positive_box_overlap():
    """Masks: a GT object whose (inclusive) box only touches the prediction's box is no candidate."""
    gt = np.zeros((10, 10), np.int32)
    gt[0:5, 0:5] = 1
    p = np.zeros((10, 10), bool)
    p[0:5, 4] = True  # one column wide: inclusive box has zero width -> no candidate at all
    r = ap.evaluate([gt], [[p]], [[0.5]])
    assert r["iou_seg"][0] == -np.inf
    r = ap.evaluate([gt], [[p]], [[0.5]], box_convention="pixel_extent")
    assert r["iou_seg"][0] == 5 / 25


def test_no_gt_and_no_predictions():
    empty = np.zeros((5, 5), np.int32)
    assert ap.evaluate([empty], [[]], [[]])["ap_seg"] == [0.0] * 10
    p = np.ones((5, 5), bool)
    r = ap.evaluate([empty], [[p]], [[1.0]])
    assert r["ap_seg"] == [0.0] * 10 and r["ap_dec"] == [0.0] * 10
    gt = np.zeros((5, 5), np.int32)
    gt[1:4, 1:4] = 3
    assert ap.evaluate([gt], [[]], [[]])["ap_seg"] == [0.0] * 10
    assert ap.evaluate([gt], [[gt > 0]], [[0.1]])["ap_seg"] == [1.0] * 10


def test_match_is_first_come_by_stable_rank():
    b = ap.Best(np.array([0, 0, 0]), np.array([0.9, 0.95, 0.6]))
    rank = ap.pooled_rank(np.array([0.5, 0.5, 0.7]))
    assert rank.tolist() == [2, 0, 1]
    tp = ap.match(b, rank, [0.5, 0.7], "seg")
    assert tp.tolist() == [[True, False, False], [False, True, False]]


def test_dsb_counts():
    gt = np.zeros((10, 10), np.int32)
    gt[0:4, 0:4] = 1
    gt[5:9, 5:9] = 2
    pix, own = ap.masks_to_pixels([gt == 1, gt == 1, np.pad(np.ones((2, 2), bool), ((0, 8), (8, 0)))])
    o = ap.overlaps(gt, pix, own, 3)
    tp = ap.dsb_counts(o, ap.DEFAULT_THRESHOLDS)
    assert tp.tolist() == [1] * 10  # duplicates count once; object 2 is missed
    assert ap.dsb_image_score(tp, 3, 2) == 1 / (3 + 2 - 1)
    assert ap.dsb_image_score(np.zeros(10), 0, 0) == 1.0
