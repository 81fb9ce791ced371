"""One category rule for both evaluators (issue 16): APseg / APdec and the COCO AP extra of one metrics.json
always score the same predictions; a prediction whose category_id is not the ground truth's single category
is rejected by both, naming the file, the record and the expected id."""

from __future__ import annotations

import json

import numpy as np
import pytest

from objguided.cli import main
from objguided.data.canonical import write_sample
from objguided.errors import DataError
from objguided.metrics.coco import CATEGORY_ID, encode_mask, gt_coco_dict, read_predictions
from objguided.metrics.cocoeval import coco_mask_ap
from objguided.metrics.score import score_predictions


def _labels() -> np.ndarray:
    labels = np.zeros((24, 24), np.uint16)
    labels[2:8, 2:8] = 1
    labels[12:20, 4:10] = 2
    labels[4:10, 14:22] = 3
    return labels


@pytest.fixture
def gt(tmp_path):
    labels = _labels()
    root = tmp_path / "ds"
    write_sample(root, "img00", np.zeros(labels.shape, np.uint8), labels)
    return root, labels


def _records(labels: np.ndarray, categories) -> list[dict]:
    """One perfect prediction per object, with the given category ids."""
    return [{"image_id": "img00", "category_id": c, "segmentation": encode_mask(labels == k + 1),
             "score": 0.9 - 0.1 * k} for k, c in enumerate(categories)]


def test_the_single_category_scores_the_same_in_both(gt, tmp_path):
    root, labels = gt
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(_records(labels, [CATEGORY_ID] * 3)))
    metrics = score_predictions(root, pred)
    assert metrics["ap_seg_mean"] == 1.0 and metrics["extra"]["coco_ap_seg"] == pytest.approx(1.0)
    assert "category_id 1" in metrics["evaluator"]["category_rule"]


@pytest.mark.parametrize("bad", [2, 0, "1", 1.0, True, None])
def test_another_category_is_rejected_by_both(gt, tmp_path, bad):
    """Before: a record of category 2 was a true positive for APseg (1.0) but left out of COCO AP (< 1)."""
    root, labels = gt
    pred = tmp_path / "pred.json"
    records = _records(labels, [CATEGORY_ID, bad, CATEGORY_ID])
    pred.write_text(json.dumps(records))
    expected = (f"{pred}: record 1 (image 'img00'): category_id {bad!r} is not the ground truth's single category "
                f"(expected 1); the datasets are single-class: write category_id 1 for every prediction")
    for check in (lambda: score_predictions(root, pred), lambda: score_predictions(root, pred, extras=False),
                  lambda: read_predictions(pred)):
        with pytest.raises(DataError) as info:
            check()
        assert str(info.value) == expected
    # the COCO evaluator on its own applies the same rule (it would otherwise drop the record silently)
    with pytest.raises(DataError, match=r"COCO AP: detection 1 \(image 'img00'\): category_id .* is not a "
                                        r"ground-truth category \(expected one of \[1\]\)"):
        coco_mask_ap(gt_coco_dict([("img00", labels)]), records)


def test_score_cli_rejects_it_in_one_line(gt, tmp_path, capsys):
    root, labels = gt
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(_records(labels, [CATEGORY_ID, CATEGORY_ID, 2])))
    out = tmp_path / "metrics.json"
    assert main(["score", "--gt", str(root), "--pred", str(pred), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"objguided score: error: {pred}: record 2 (image 'img00'): category_id 2 is not the ground "
                   "truth's single category (expected 1); the datasets are single-class: write category_id 1 "
                   "for every prediction\n")
    assert not out.exists()
