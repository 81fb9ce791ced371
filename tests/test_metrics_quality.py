"""CTC (SEG, DET, OP_CSB) and CVPPP (SBD, FgBgDice, DiffFG) measures on hand-made label maps."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from objguided.data.canonical import write_label_map
from objguided.errors import DataError
from objguided.metrics.coco import encode_instances, write_predictions
from objguided.metrics.quality import (
    aggregate,
    aggregate_ctc,
    aggregate_cvppp,
    ctc_measures,
    cvppp_measures,
    instances_to_label_map,
    measures,
    overlap,
    quality_from_predictions,
)


def three_cells() -> np.ndarray:
    """8x8 GT with objects 1 (2x2 = 4 px), 2 (2x3 = 6 px) and 5 (3x3 = 9 px)."""
    gt = np.zeros((8, 8), np.int32)
    gt[0:2, 0:2] = 1
    gt[0:2, 4:7] = 2
    gt[5:8, 5:8] = 5
    return gt


def approx(x, y=None):
    return pytest.approx(x, abs=1e-12) if y is None else pytest.approx(x, rel=y)


# --------------------------------------------------------------------------------------- brute force

def brute(gt: np.ndarray, pred: np.ndarray) -> dict:
    """Object-by-object loops, written straight from the definitions (independent of the module)."""
    g_ids = [int(i) for i in np.unique(gt) if i]
    p_ids = [int(i) for i in np.unique(pred) if i]
    jac, hits = [], {p: 0 for p in p_ids}
    for r in g_ids:
        rm = gt == r
        best = 0.0
        for s in p_ids:
            sm = pred == s
            inter = int((rm & sm).sum())
            if inter > 0.5 * rm.sum():
                best = inter / int((rm | sm).sum())
                hits[s] += 1
        jac.append(best)
    fn = sum(1 for r in g_ids if not any(((gt == r) & (pred == s)).sum() > 0.5 * (gt == r).sum() for s in p_ids))
    fp = sum(1 for s in p_ids if hits[s] == 0)
    ns = sum(max(h - 1, 0) for h in hits.values())
    aogm, aogm0 = 5 * ns + 10 * fn + fp, 10 * len(g_ids)

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    def best_dice(la, ia, lb, ib):
        if not ia:
            return 0.0
        return float(np.mean([max([dice(la == i, lb == j) for j in ib], default=0.0) for i in ia]))

    fga, fgb = gt > 0, pred > 0
    return {"seg": float(np.mean(jac)) if g_ids else None,
            "det": 1 - min(aogm, aogm0) / aogm0 if aogm0 else None,
            "ns": ns, "fn": fn, "fp": fp,
            "best_dice": min(best_dice(pred, p_ids, gt, g_ids), best_dice(gt, g_ids, pred, p_ids)),
            "fg_bg_dice": dice(fga, fgb) if (fga.sum() + fgb.sum()) else 1.0,
            "diff_fg": len(p_ids) - len(g_ids)}


# --------------------------------------------------------------------------------------------- cases

def test_perfect_prediction_scores_one_whatever_the_ids():
    gt = three_cells()
    pred = np.where(gt > 0, gt * 7 + 3, 0)
    c, v = ctc_measures(gt, pred), cvppp_measures(gt, pred)
    assert (c["seg"], c["det"], c["op_csb"]) == (1.0, 1.0, 1.0)
    assert (c["fn"], c["fp"], c["ns"], c["aogm_d"], c["aogm_d0"]) == (0, 0, 0, 0, 30)
    assert (v["best_dice"], v["fg_bg_dice"], v["diff_fg"], v["abs_diff_fg"]) == (1.0, 1.0, 0, 0)


def test_one_missed_object():
    gt = three_cells()
    pred = np.where(gt == 5, 0, gt)  # object 5 (9 px) missed
    c, v = ctc_measures(gt, pred), cvppp_measures(gt, pred)
    assert c["seg"] == approx(2 / 3)
    assert (c["fn"], c["fp"], c["ns"]) == (1, 0, 0)
    assert c["det"] == approx(1 - 10 / 30)
    assert c["op_csb"] == approx((2 / 3 + 2 / 3) / 2)
    assert v["best_dice_pred_gt"] == 1.0 and v["best_dice_gt_pred"] == approx(2 / 3)
    assert v["best_dice"] == approx(2 / 3)
    assert v["fg_bg_dice"] == approx(2 * 10 / (19 + 10))
    assert (v["diff_fg"], v["abs_diff_fg"]) == (-1, 1)


def test_prediction_merging_two_objects_costs_one_split():
    gt = np.array([[1, 1, 2, 2],
                   [1, 1, 2, 2]])
    pred = np.array([[9, 9, 9, 9],
                     [9, 9, 9, 9]])
    c, v = ctc_measures(gt, pred), cvppp_measures(gt, pred)
    assert (c["ns"], c["fn"], c["fp"]) == (1, 0, 0)  # 9 covers > half of both: matched twice, NS = 2 - 1
    assert c["aogm_d"] == 5 and c["det"] == approx(1 - 5 / 20)
    assert c["seg"] == approx(0.5)  # both matched, Jaccard 4/8 each
    assert v["best_dice"] == approx(2 * 4 / 12) and v["diff_fg"] == -1 and v["fg_bg_dice"] == 1.0


def test_merge_of_three_costs_two_splits():
    gt = np.array([[1, 2, 3]])
    c = ctc_measures(gt, np.array([[4, 4, 4]]))
    assert (c["ns"], c["aogm_d"], c["aogm_d0"]) == (2, 10, 30)


def test_object_split_in_two_predictions():
    gt = np.array([[1, 1, 1, 1, 1, 1]])
    pred = np.array([[3, 3, 3, 3, 4, 4]])  # 3 covers 4/6 > half: match; 4 is a false positive
    c, v = ctc_measures(gt, pred), cvppp_measures(gt, pred)
    assert (c["ns"], c["fn"], c["fp"]) == (0, 0, 1)
    assert c["seg"] == approx(4 / 6) and c["det"] == approx(1 - 1 / 10)
    assert v["diff_fg"] == 1 and v["fg_bg_dice"] == 1.0
    assert v["best_dice_gt_pred"] == approx(2 * 4 / 10)
    assert v["best_dice_pred_gt"] == approx((2 * 4 / 10 + 2 * 2 / 8) / 2)
    halves = np.array([[3, 3, 3, 4, 4, 4]])  # exactly half each: no match, the GT object is missed
    c = ctc_measures(gt, halves)
    assert (c["seg"], c["fn"], c["fp"], c["det"]) == (0.0, 1, 2, 0.0)  # AOGM-D 12 > AOGM-D_0 10: clipped


def test_one_false_positive():
    gt = three_cells()
    pred = gt.copy()
    pred[4, 0:3] = 8  # on background
    c, v = ctc_measures(gt, pred), cvppp_measures(gt, pred)
    assert c["seg"] == 1.0 and (c["fp"], c["fn"], c["ns"]) == (1, 0, 0)
    assert c["det"] == approx(1 - 1 / 30)
    assert v["best_dice_gt_pred"] == 1.0 and v["best_dice"] == approx(3 / 4)
    assert (v["diff_fg"], v["abs_diff_fg"]) == (1, 1)
    assert v["fg_bg_dice"] == approx(2 * 19 / (19 + 22))


def test_coverage_of_half_or_less_does_not_match():
    gt = np.zeros((2, 4), np.int32)
    gt[:, 0:2] = 1  # 4 px
    half = np.zeros_like(gt)
    half[0, 0:2] = 2  # 2 of 4 px: not more than half
    assert ctc_measures(gt, half)["seg"] == 0.0 and ctc_measures(gt, half)["fn"] == 1
    most = half.copy()
    most[1, 0] = 2  # 3 of 4 px
    m = ctc_measures(gt, most)
    assert m["seg"] == approx(3 / 4) and m["fn"] == 0
    big = np.ones_like(gt) * 6  # covers the whole object and more: matched, Jaccard 4/8
    m = ctc_measures(gt, big)
    assert m["seg"] == approx(0.5) and m["fp"] == 0


def test_empty_prediction():
    gt = three_cells()
    empty = np.zeros_like(gt)
    c, v = ctc_measures(gt, empty), cvppp_measures(gt, empty)
    assert (c["seg"], c["det"], c["op_csb"], c["fn"], c["fp"]) == (0.0, 0.0, 0.0, 3, 0)
    assert (v["best_dice"], v["fg_bg_dice"], v["diff_fg"], v["abs_diff_fg"]) == (0.0, 0.0, -3, 3)


def test_empty_ground_truth():
    gt = np.zeros((3, 3), np.int32)
    c, v = ctc_measures(gt, gt), cvppp_measures(gt, gt)
    assert (c["seg"], c["det"], c["op_csb"]) == (None, None, None)
    assert (v["best_dice"], v["fg_bg_dice"], v["diff_fg"]) == (0.0, 1.0, 0)
    pred = gt.copy()
    pred[1, 1] = 1
    c, v = ctc_measures(gt, pred), cvppp_measures(gt, pred)
    assert (c["seg"], c["det"], c["fp"]) == (None, None, 1)
    assert (v["best_dice"], v["fg_bg_dice"], v["diff_fg"]) == (0.0, 0.0, 1)


def test_bad_inputs():
    with pytest.raises(DataError, match="same size"):
        overlap(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(DataError, match="negative"):
        overlap(np.array([[-1, 0]]), np.zeros((1, 2), int))
    with pytest.raises(DataError, match="integer"):
        overlap(np.zeros((2, 2), float), np.zeros((2, 2), int))
    with pytest.raises(DataError, match="HxW"):
        overlap(np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int))


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_object_by_object_loops(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 14)
    gt = rng.integers(0, 5, shape) * (rng.random(shape) < 0.8)
    pred = np.where(rng.random(shape) < 0.7, gt, rng.integers(0, 7, shape))
    if seed % 3 == 0:  # blobs rather than noise
        gt = np.kron(rng.integers(0, 4, (3, 4)), np.ones((4, 4), int))[:12, :14]
        pred = np.roll(gt, seed % 5, axis=1) * (rng.random(gt.shape) < 0.9)
    got, ref = measures(gt, pred), brute(gt, pred)
    for key in ("seg", "det"):
        assert (got["ctc"][key] is None) == (ref[key] is None)
        if ref[key] is not None:
            assert got["ctc"][key] == approx(ref[key], 1e-12)
    for key in ("ns", "fn", "fp"):
        assert got["ctc"][key] == ref[key]
    for key in ("best_dice", "fg_bg_dice", "diff_fg"):
        assert got["cvppp"][key] == approx(ref[key], 1e-12)


# ------------------------------------------------------------------------------------------ painting

def test_overlapping_instances_painted_by_score():
    a = np.zeros((4, 4), bool)
    a[0:3, 0:3] = True
    b = np.zeros((4, 4), bool)
    b[1:4, 1:4] = True
    c = np.zeros((4, 4), bool)
    c[1, 1] = True  # inside both
    lab = instances_to_label_map([a, b, c], [0.5, 0.9, 0.1])
    assert lab[1, 1] == 2 and lab[0, 0] == 1 and lab[3, 3] == 2
    assert 3 not in lab  # wholly covered by better instances: vanishes
    assert (lab == 1).sum() == 9 - 4 and (lab == 2).sum() == 9
    lab = instances_to_label_map([a, b, c], [0.5, 0.9, 0.95])
    assert lab[1, 1] == 3 and (lab == 2).sum() == 8
    tie = instances_to_label_map([a, b], [0.7, 0.7])  # equal scores: the earlier instance wins
    assert lab.dtype == np.int32 and tie[1, 1] == 1 and tie[2, 2] == 1 and tie[3, 3] == 2
    stack = instances_to_label_map(np.stack([a, b]), np.array([0.2, 0.1]))
    assert stack[1, 1] == 1
    # the painted map is what the measures see: with b winning, GT a loses 4 of 9 px but keeps its match
    gt = np.zeros((4, 4), int)
    gt[a] = 1
    gt[b & ~a] = 2
    m = ctc_measures(gt, instances_to_label_map([a, b], [0.1, 0.9]))
    assert m["fn"] == 0 and m["fp"] == 0 and m["seg"] == approx((5 / 9 + 5 / 9) / 2)


def test_painting_bad_inputs():
    m = np.ones((2, 2), bool)
    with pytest.raises(DataError, match="2 masks but 1 scores"):
        instances_to_label_map([m, m], [0.5])
    with pytest.raises(DataError, match="shape"):
        instances_to_label_map([m, np.ones((3, 2), bool)], [0.5, 0.4])
    with pytest.raises(DataError, match="no shape"):
        instances_to_label_map([], [])
    with pytest.raises(DataError, match="non-finite"):
        instances_to_label_map([m], [float("nan")])


# --------------------------------------------------------------------------------------- aggregation

def test_ctc_pools_objects_over_the_sequence():
    one = ctc_measures(np.array([[1, 1]]), np.array([[1, 1]]))  # 1 GT object, perfect
    three = ctc_measures(np.array([[1, 0, 2, 0, 3]]), np.zeros((1, 5), int))  # 3 GT objects, all missed
    agg = aggregate_ctc([one, three])
    assert agg["seg"] == approx(1 / 4)  # not the per-image mean (1 + 0) / 2
    assert agg["det"] == approx(1 - 30 / 40)
    assert agg["op_csb"] == approx((1 / 4 + 1 / 4) / 2)
    assert (agg["n_gt"], agg["fn"], agg["images"]) == (4, 3, 2)
    # the min of DET applies to the sums: an image worse than empty is offset by a good one
    bad = ctc_measures(np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]),
                       np.array([[0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]]))  # 1 FN + 12 FP = 22 > 10
    assert bad["det"] == 0.0
    assert aggregate_ctc([one, bad])["det"] == 0.0  # 22 > 20: clipped
    assert aggregate_ctc([one, one, one, bad])["det"] == approx(1 - 22 / 40)
    empty = aggregate_ctc([])
    assert (empty["seg"], empty["det"], empty["op_csb"], empty["images"]) == (None, None, None, 0)


def test_cvppp_averages_per_image():
    gt = np.array([[1, 1, 2, 2]])
    items = [cvppp_measures(gt, gt), cvppp_measures(gt, np.array([[3, 3, 3, 3]])),
             cvppp_measures(gt, np.array([[1, 2, 3, 4]]))]
    agg = aggregate_cvppp(items)
    assert agg["diff_fg"] == approx((0 - 1 + 2) / 3) and agg["abs_diff_fg"] == approx((0 + 1 + 2) / 3)
    assert agg["best_dice"] == approx(np.mean([it["best_dice"] for it in items]))
    assert agg["best_dice_std"] == approx(np.std([it["best_dice"] for it in items]))
    assert agg["fg_bg_dice"] == 1.0 and agg["images"] == 3
    assert aggregate_cvppp([])["best_dice"] is None
    both = aggregate([ctc_measures(gt, gt)], items)
    assert set(both) == {"ctc", "cvppp"} and both["ctc"]["seg"] == 1.0


# -------------------------------------------------------------------------------------------- files

def write_case(tmp_path, gts: dict, preds: dict):
    root = tmp_path / "gt"
    for image_id, labels in gts.items():
        write_label_map(root / f"{image_id}.png", labels)
    records = []
    for image_id, insts in preds.items():
        records += encode_instances(image_id, [SimpleNamespace(mask=m, score=s, soft_area=None) for m, s in insts])
    records = records[::-1]  # file order must not matter across images
    path = tmp_path / "predictions.json"
    write_predictions(path, records)
    return root, path


def test_quality_from_predictions_matches_the_per_image_functions(tmp_path):
    gt1 = three_cells()
    gt2 = np.zeros((5, 6), np.int32)
    gt2[0:2, 0:2] = 1
    gt2[3:5, 3:6] = 2
    gt3 = np.zeros((4, 4), np.int32)
    gt3[1:3, 1:3] = 4
    big = np.zeros((8, 8), bool)
    big[0:3, 0:3] = True  # overlaps object 1, low score: loses the overlap to the exact mask
    speck = np.zeros((8, 8), bool)
    speck[7, 0] = True  # a false positive with a low score
    preds = {
        "A1_plant001": [(gt1 == 1, 0.9), (big, 0.4), (gt1 == 2, 0.8), (speck, 0.05)],
        "A2_plant001": [(gt2 == 2, 0.7)],
        # A2_plant002: no prediction at all
    }
    gts = {"A1_plant001": gt1, "A2_plant001": gt2, "A2_plant002": gt3}
    root, path = write_case(tmp_path, gts, preds)

    out = quality_from_predictions(root, path, per_image=True)
    maps = {i: instances_to_label_map([m for m, _ in p], [s for _, s in p]) for i, p in preds.items()}
    maps["A2_plant002"] = np.zeros_like(gt3)
    per = {i: measures(gts[i], maps[i]) for i in sorted(gts)}
    assert [r["image_id"] for r in out["per_image"]] == sorted(gts)
    for r in out["per_image"]:  # the pixel-list path gives exactly the painted label map's numbers
        assert r["ctc"] == {**per[r["image_id"]]["ctc"], "det_reference": "labels", "truth_complete": True}
        assert r["cvppp"] == per[r["image_id"]]["cvppp"]
    expect = aggregate([p["ctc"] for p in per.values()], [p["cvppp"] for p in per.values()])
    assert out["ctc"] == expect["ctc"] and out["cvppp"] == expect["cvppp"]
    assert out["images"] == 3 and out["settings"]["predictions_kept"] == 5
    assert set(out["groups"]) == {"A1", "A2"} and out["groups"]["A2"]["images"] == 2
    assert out["groups"]["A1"]["cvppp"] == aggregate_cvppp([per["A1_plant001"]["cvppp"]])
    json.dumps(out)  # JSON-ready (it goes into metrics.json)
    # `objguided score` computes the same in its own pass over the images (nothing read twice)
    from objguided.metrics.score import score_predictions

    assert score_predictions(root, path)["quality"] == quality_from_predictions(root, path)
    assert "quality" not in score_predictions(root, path, extras=False)

    kept = quality_from_predictions(root, path, min_score=0.1)
    assert kept["settings"]["predictions_kept"] == 4 and "per_image" not in kept
    assert kept["ctc"]["fp"] == out["ctc"]["fp"] - 1

    only = quality_from_predictions(root, path, min_score=2.0)  # nothing kept: every GT object missed
    assert only["ctc"]["seg"] == 0.0 and only["ctc"]["det"] == 0.0 and only["cvppp"]["best_dice"] == 0.0


def test_quality_from_predictions_subset_and_no_groups(tmp_path):
    gt = np.array([[1, 1, 0], [0, 0, 2]], np.int32)
    root, path = write_case(tmp_path, {"img0": gt, "img1": gt}, {"img1": [(gt == 1, 0.9)]})
    (root / "split.json").write_text(json.dumps({"train": ["img0"], "val": [], "test": ["img1"]}))
    out = quality_from_predictions(root, path, subset="test")
    assert out["images"] == 1 and out["groups"] == {}
    assert out["ctc"]["seg"] == 0.5 and out["cvppp"]["diff_fg"] == -1


def test_quality_from_predictions_errors(tmp_path):
    gt = np.array([[1, 1, 0], [0, 0, 2]], np.int32)
    root, path = write_case(tmp_path, {"img0": gt}, {"other": [(gt == 1, 0.9)]})
    with pytest.raises(DataError, match="unknown image id 'other'"):
        quality_from_predictions(root, path)
    root, path = write_case(tmp_path, {"img0": gt}, {"img0": [(np.ones((3, 3), bool), 0.9)]})
    with pytest.raises(DataError, match="RLE size 3x3 differs"):
        quality_from_predictions(root, path)
    with pytest.raises(DataError, match="not found"):
        quality_from_predictions(root, tmp_path / "missing.json")
