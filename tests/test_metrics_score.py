"""The file-level evaluator (``score_predictions``), COCO I/O and the extras."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from objguided.data.canonical import write_label_map, write_sample
from objguided.errors import DataError
from objguided.metrics.coco import (
    decode_mask,
    encode_instances,
    encode_mask,
    export_gt_coco,
    read_predictions,
    write_predictions,
)
from objguided.metrics.cocoeval import coco_mask_ap
from objguided.metrics.score import DEFAULT_THRESHOLDS, score_predictions

_spec = importlib.util.spec_from_file_location("_bf", Path(__file__).with_name("test_metrics_ap.py"))
bf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bf)


def make_dataset(tmp_path: Path, gts, preds, scores, softs=None, shuffle_seed=0, canonical=True):
    """GT label maps under tmp_path/ds (canonical or plain) and predictions.json; records of the images
    are interleaved in a shuffled image order, keeping each image's own order."""
    root = tmp_path / "ds"
    ids = [f"img{k:02d}" for k in range(len(gts))]
    for image_id, labels in zip(ids, gts):
        if canonical:
            write_sample(root, image_id, np.zeros(labels.shape, np.uint8), labels)
        else:
            write_label_map(root / f"{image_id}.png", labels)
    per_image = []
    for k, image_id in enumerate(ids):
        inst = [SimpleNamespace(mask=m, score=s, soft_area=(softs[k][i] if softs else None))
                for i, (m, s) in enumerate(zip(preds[k], scores[k]))]
        per_image.append(encode_instances(image_id, inst))
    rng = np.random.default_rng(shuffle_seed)
    queues = [list(r) for r in per_image]
    records = []
    while any(queues):
        k = int(rng.choice([i for i, q in enumerate(queues) if q]))
        records.append(queues[k].pop(0))
    write_predictions(tmp_path / "pred.json", records)
    return root, tmp_path / "pred.json", ids


# ----------------------------------------------------------------------------- agreement

@pytest.mark.parametrize("box_convention", ["inclusive", "pixel_extent"])
@pytest.mark.parametrize("mask_iou", ["binary", "soft_area"])
def test_score_matches_brute_force(tmp_path, box_convention, mask_iou):
    for seed in range(12):
        gts, preds, scores, softs = bf.random_case(1000 + seed)
        d = tmp_path / str(seed)
        root, pred, _ = make_dataset(d, gts, preds, scores, softs, shuffle_seed=seed)
        m = score_predictions(root, pred, box_convention=box_convention, mask_iou=mask_iou, extras=False)
        ref = bf.brute_force(gts, preds, scores, softs, box_convention, mask_iou)
        np.testing.assert_allclose(m["ap_seg"], ref["ap_seg"], rtol=0, atol=1e-9, err_msg=f"seed {seed}")
        np.testing.assert_allclose(m["ap_dec"], ref["ap_dec"], rtol=0, atol=1e-9, err_msg=f"seed {seed}")
        assert m["counts"]["tp_seg"] == ref["tp_seg"] and m["counts"]["tp_dec"] == ref["tp_dec"]
        assert m["counts"]["gt_kept"] == ref["n_gt"]
        assert sum(r["tp_seg"][3] for r in m["per_image"]) == ref["tp_seg"][3]


def test_metrics_dict_shape_and_extras(tmp_path):
    gts, preds, scores, softs = bf.random_case(7)
    root, pred, ids = make_dataset(tmp_path, gts, preds, scores, softs)
    m = score_predictions(root, pred)
    json.dumps(m, allow_nan=False)
    assert m["thresholds"] == DEFAULT_THRESHOLDS.tolist()
    assert m["ap_seg_50"] == m["ap_seg"][0] and m["ap_seg_75"] == m["ap_seg"][5]
    assert math.isclose(m["ap_seg_mean"], sum(m["ap_seg"]) / 10)
    assert m["evaluator"]["box_convention"] == "inclusive" and m["evaluator"]["mask_iou"] == "binary"
    assert [r["image_id"] for r in m["per_image"]] == ids
    assert m["counts"]["images"] == len(ids)
    assert m["counts"]["predictions"] == sum(len(p) for p in preds)
    assert 0 <= m["extra"]["coco_ap_seg"] <= 1 and 0 <= m["extra"]["dsb_score"] <= 1
    off = score_predictions(root, pred, extras=False)
    assert off["extra"]["coco_ap_seg"] is None and off["extra"]["dsb_score"] is None
    assert off["ap_seg"] == m["ap_seg"]


def test_gt_images_without_predictions_count(tmp_path):
    gt = np.zeros((20, 20), np.int32)
    gt[2:8, 2:8] = 1
    gt[10:16, 10:16] = 2
    root, pred, _ = make_dataset(tmp_path, [gt, gt], [[gt == 1, gt == 2], []], [[0.9, 0.8], []])
    m = score_predictions(root, pred)
    assert m["counts"]["gt_kept"] == 4 and m["counts"]["tp_seg"][0] == 2
    assert m["ap_seg"][0] == 0.5  # recall reaches 0.5 at precision 1
    assert m["per_image"][1]["predictions"] == 0 and m["per_image"][1]["dsb_score"] == 0.0
    assert m["per_image"][0]["dsb_score"] == 1.0


def test_plain_folder_and_subset(tmp_path):
    gt = np.zeros((12, 12), np.int32)
    gt[1:6, 1:6] = 4
    root, pred, ids = make_dataset(tmp_path, [gt, gt, gt], [[gt == 4], [], []], [[0.5], [], []], canonical=False)
    assert score_predictions(root, pred)["counts"]["gt_kept"] == 3
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["img01"], "val": ["img02"], "test": ["img00"]}))
    m = score_predictions(root, pred, split_path=split, subset="test")
    assert m["counts"]["images"] == 1 and m["ap_seg"] == [1.0] * 10
    with pytest.raises(DataError, match="unknown image id 'img00'"):
        score_predictions(root, pred, split_path=split, subset="val")


def test_empty_predictions_file(tmp_path):
    gt = np.zeros((12, 12), np.int32)
    gt[1:6, 1:6] = 1
    root, pred, _ = make_dataset(tmp_path, [gt], [[]], [[]])
    m = score_predictions(root, pred)
    assert m["ap_seg"] == [0.0] * 10 and m["extra"]["coco_ap_seg"] == 0.0


# ----------------------------------------------------------------------------- bad input

@pytest.fixture
def small(tmp_path):
    gt = np.zeros((16, 16), np.int32)
    gt[2:9, 2:9] = 1
    root, pred, _ = make_dataset(tmp_path, [gt], [[gt == 1]], [[0.9]])
    good = json.loads(pred.read_text())
    return root, pred, good


def _write(pred: Path, records):
    pred.write_text(json.dumps(records))


def test_unknown_image_id(small):
    root, pred, good = small
    _write(pred, good + [dict(good[0], image_id="nope")])
    with pytest.raises(DataError, match=r"pred\.json: record 1: unknown image id 'nope'"):
        score_predictions(root, pred)


def test_rle_size_mismatch(small):
    root, pred, good = small
    other = encode_mask(np.ones((10, 12), bool))
    _write(pred, good + [dict(good[0], segmentation=other)])
    with pytest.raises(DataError, match=r"pred\.json: record 1: image 'img00': RLE size 10x12 differs from its "
                                        r"ground-truth label map 16x16"):
        score_predictions(root, pred)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "high", None])
def test_non_finite_score(small, bad):
    root, pred, good = small
    _write(pred, [dict(good[0], score=bad)])
    with pytest.raises(DataError, match=r"pred\.json: record 0 \(image 'img00'\): score .* not a finite number"):
        score_predictions(root, pred)
    with pytest.raises(DataError, match=r"pred\.json: record 0"):
        read_predictions(pred)


def test_empty_mask(small):
    root, pred, good = small
    _write(pred, good + [dict(good[0], segmentation=encode_mask(np.zeros((16, 16), bool)))])
    with pytest.raises(DataError, match=r"pred\.json: record 1 \(image 'img00'\): empty mask"):
        score_predictions(root, pred)
    with pytest.raises(DataError, match=r"pred\.json: record 1 \(image 'img00'\): empty mask"):
        read_predictions(pred)


@pytest.mark.parametrize("counts,why", [("", "empty 'counts'"), ("0b", "end in the middle"),
                                        ("~~", "outside the COCO RLE alphabet"), ("42", "sum to 6 pixels"),
                                        ("é", "non-ASCII")])
def test_corrupt_rle(tmp_path, counts, why):
    pred = tmp_path / "p.json"
    rec = {"image_id": "a", "category_id": 1, "score": 1.0, "segmentation": {"size": [3, 4], "counts": counts}}
    good = {"image_id": "a", "category_id": 1, "score": 1.0, "segmentation": encode_mask(np.ones((3, 4), bool))}
    _write(pred, [good, rec])
    with pytest.raises(DataError, match=rf"p\.json: record 1: segmentation RLE .*{why}"):
        read_predictions(pred)


def test_bad_records(tmp_path):
    pred = tmp_path / "p.json"
    good = {"image_id": "a", "category_id": 1, "score": 1.0, "segmentation": encode_mask(np.ones((3, 4), bool))}
    for bad, msg in [({k: v for k, v in good.items() if k != "segmentation"}, "missing key 'segmentation'"),
                     (dict(good, image_id=3), "must be a string"),
                     (dict(good, soft_area=-1.0), "soft_area"),
                     (dict(good, segmentation={"size": [3, 4], "counts": [0, 12]}), "compressed RLE")]:
        _write(pred, [good, bad])
        with pytest.raises(DataError, match=rf"p\.json: record 1.*{msg}"):
            read_predictions(pred)
    pred.write_text("{}")
    with pytest.raises(DataError, match="expected a JSON list"):
        read_predictions(pred)
    pred.write_text("[")
    with pytest.raises(DataError, match="not valid JSON"):
        read_predictions(pred)


def test_encode_instances_errors():
    m = np.zeros((4, 4), bool)
    with pytest.raises(DataError, match="image 'x', instance 0: empty mask"):
        encode_instances("x", [SimpleNamespace(mask=m, score=1.0, soft_area=None)])
    m[1, 1] = True
    with pytest.raises(DataError, match="image 'x', instance 0: non-finite score"):
        encode_instances("x", [SimpleNamespace(mask=m, score=float("nan"), soft_area=None)])
    rec = encode_instances("x", [SimpleNamespace(mask=m, score=1, soft_area=0.5)])[0]
    assert rec["soft_area"] == 0.5 and rec["bbox"] == [1.0, 1.0, 1.0, 1.0]
    assert (decode_mask(rec["segmentation"]) == m).all()


def test_read_write_roundtrip(tmp_path):
    gts, preds, scores, softs = bf.random_case(3)
    root, pred, _ = make_dataset(tmp_path, gts, preds, scores, softs)
    records = read_predictions(pred)
    assert len(records) == sum(len(p) for p in preds)


# ----------------------------------------------------------------------------- COCO extras

def test_coco_ap_cap_lifted(tmp_path):
    """150 perfect objects in one image: COCO AP 1.0 with the cap lifted (100 dets would cap recall)."""
    labels = np.zeros((150, 150), np.int32)
    k = 0
    for r in range(15):
        for c in range(10):
            k += 1
            labels[r * 10 + 1:r * 10 + 8, c * 15 + 1:c * 15 + 12] = k
    masks = [labels == i for i in range(1, 151)]
    scores = [float(s) for s in np.linspace(1, 0.1, 150)]
    root, pred, _ = make_dataset(tmp_path, [labels], [masks], [scores])
    m = score_predictions(root, pred)
    assert m["extra"]["coco_ap_seg"] == 1.0
    assert m["extra"]["coco_max_dets"] >= 150
    assert m["extra"]["dsb_score"] == 1.0 and m["ap_seg"] == [1.0] * 10
    # what the default cap would have given: recall stops at 100/150
    gt = export_gt_coco(root, tmp_path / "gt.json")
    from objguided.metrics.cocoeval import coco_backend, to_integer_ids
    g, dets, _ = to_integer_ids(gt, json.loads(pred.read_text()))
    _, COCO, COCOeval = coco_backend()
    cgt = COCO(g)
    ev = COCOeval(cgt, cgt.loadRes(dets), "segm")
    ev.evaluate()
    ev.accumulate()
    capped = np.asarray(ev.eval["precision"])[:, :, 0, 0, -1]
    assert capped[capped > -1].mean() < 0.8


def test_coco_backends_agree(tmp_path):
    pytest.importorskip("faster_coco_eval")
    gts, preds, scores, _ = bf.random_case(11)
    root, pred, _ = make_dataset(tmp_path, gts, preds, scores)
    gt = export_gt_coco(root, tmp_path / "gt.json")
    recs = json.loads(pred.read_text())
    a = coco_mask_ap(gt, recs, backend="faster-coco-eval")["coco_ap_seg"]
    b = coco_mask_ap(gt, recs, backend="pycocotools")["coco_ap_seg"]
    assert abs(a - b) < 1e-12


def test_export_gt_coco(tmp_path):
    gt = np.zeros((9, 11), np.int32)
    gt[0:3, 0:4] = 5
    gt[4:9, 6:11] = 2
    gt[8, 0] = 7
    root, _, _ = make_dataset(tmp_path, [gt], [[]], [[]])
    out = tmp_path / "gt_coco.json"
    coco = export_gt_coco(root, out)
    assert json.loads(out.read_text()) == coco
    assert coco["images"] == [{"id": "img00", "file_name": "images/img00.png", "height": 9, "width": 11}]
    anns = coco["annotations"]
    assert [a["label"] for a in anns] == [2, 5, 7]
    assert [a["area"] for a in anns] == [25, 12, 1]
    assert anns[1]["bbox"] == [0.0, 0.0, 4.0, 3.0] and all(a["iscrowd"] == 0 and a["image_id"] == "img00" for a in anns)
    for a in anns:
        assert (decode_mask(a["segmentation"]) == (gt == a["label"])).all()


def test_dsb_score_conventions(tmp_path):
    empty = np.zeros((10, 10), np.int32)
    gt = empty.copy()
    gt[2:7, 2:7] = 1
    fp = np.zeros((10, 10), bool)
    fp[0, 0:3] = True
    root, pred, _ = make_dataset(tmp_path, [empty, gt, empty], [[], [gt == 1, gt == 1], [fp]],
                                 [[], [0.9, 0.8], [0.5]])
    m = score_predictions(root, pred)
    assert [r["dsb_score"] for r in m["per_image"]] == [1.0, 0.5, 0.0]
    assert m["extra"]["dsb_score"] == 0.5


def test_many_images_parallel_path(tmp_path, monkeypatch):
    """Enough images for the forked worker pool: same numbers as the serial path and the brute force."""
    gts, preds, scores, softs = [], [], [], []
    for seed in range(8):
        g, p, s, so = bf.random_case(2000 + seed)
        gts += g
        preds += p
        scores += s
        softs += so
    assert len(gts) >= 16
    root, pred, _ = make_dataset(tmp_path, gts, preds, scores, softs, shuffle_seed=5)
    monkeypatch.setenv("OBJGUIDED_THREADS", "2")
    par = score_predictions(root, pred)
    monkeypatch.setenv("OBJGUIDED_THREADS", "1")
    ser = score_predictions(root, pred)
    assert par == ser
    ref = bf.brute_force(gts, preds, scores, softs)
    np.testing.assert_allclose(par["ap_seg"], ref["ap_seg"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(par["ap_dec"], ref["ap_dec"], rtol=0, atol=1e-9)
    assert par["counts"]["tp_seg"][0] > 20


def test_errors_from_worker_processes(tmp_path, monkeypatch):
    """Bad records are reported the same way (first in image order) when the work is split over processes."""
    gt = np.zeros((16, 16), np.int32)
    gt[2:9, 2:9] = 1
    n = 24
    root, pred, ids = make_dataset(tmp_path, [gt] * n, [[gt == 1]] * n, [[0.9]] * n)
    good = json.loads(pred.read_text())
    by_image = {r["image_id"]: i for i, r in enumerate(good)}
    monkeypatch.setenv("OBJGUIDED_THREADS", "2")
    bad = list(good)
    i20, i5 = by_image["img20"], by_image["img05"]
    bad[i20] = dict(bad[i20], segmentation=encode_mask(np.ones((8, 8), bool)))
    bad[i5] = dict(bad[i5], segmentation=encode_mask(np.zeros((16, 16), bool)))
    _write(pred, bad)
    with pytest.raises(DataError, match=rf"record {i5} \(image 'img05'\): empty mask"):
        score_predictions(root, pred)
    bad[i5] = good[i5]
    _write(pred, bad)
    with pytest.raises(DataError, match=rf"record {i20}: image 'img20': RLE size 8x8 differs"):
        score_predictions(root, pred)
