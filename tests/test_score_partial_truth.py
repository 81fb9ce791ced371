"""Scoring on partial truth (#19): the CTC HeLa miniature (tests/data/ctc/Fluo-N2DL-HeLa.zip, the real
archive's names, folders and LZW TIFFs) converted with gold truth, whose frame t003 annotates three of its
five cells. The "method" finds every cell: its predictions are the complete silver masks of the same frames.

What must hold: SEG is over the annotated objects (a prediction of an unannotated cell does not count); DET
is from the TRA markers (every cell detected, no false positive); AP is flagged as counting unannotated cells
as false positives, in metrics.json and in Table III's "which measures apply" block.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from objguided.data.canonical import read_label_map
from objguided.data.convert import convert
from objguided.metrics.coco import encode_instances, write_predictions
from objguided.metrics.quality import PARTIAL_AP_NOTE, ctc_measures, instances_to_label_map, quality_from_predictions
from objguided.metrics.score import score_predictions
from objguided.report.table34 import write_tables34

REPO = Path(__file__).resolve().parents[1]
HELA = REPO / "tests" / "data" / "ctc" / "Fluo-N2DL-HeLa.zip"
PAPER_DIR = REPO / "paper"
pytest.importorskip("imagecodecs")  # the miniature's TIFFs are LZW, as the real archive's


@pytest.fixture(scope="module")
def hela(tmp_path_factory):
    """(gold dataset folder, predictions = silver masks of the gold frames, gold manifest)."""
    tmp = tmp_path_factory.mktemp("hela")
    opts = {"name": "Fluo-N2DL-HeLa", "archive": str(HELA)}
    gold = convert({"source": "ctc", "options": {**opts, "truth": "gold"}}, tmp / "gold")
    convert({"source": "ctc", "options": {**opts, "truth": "silver"}}, tmp / "silver")
    records = []
    for image_id in gold["ids"]:
        silver = read_label_map(tmp / "silver" / "labels" / f"{image_id}.png")
        records += encode_instances(image_id, [SimpleNamespace(mask=silver == k, score=0.9, soft_area=None)
                                               for k in np.unique(silver)[1:]])
    write_predictions(tmp / "pred.json", records)
    return tmp / "gold", tmp / "pred.json", gold


def test_the_case_has_partial_gold(hela):
    _, _, manifest = hela
    partial = [i for i, ok in manifest["truth_complete"].items() if not ok]
    assert partial and all(i.endswith("t003") for i in partial)
    assert set(manifest["markers"]) == set(manifest["ids"])


def test_seg_over_annotated_objects_and_det_from_markers(hela):
    root, pred, manifest = hela
    q = quality_from_predictions(root, pred, per_image=True)
    assert q["truth"]["partial"] == 2 and q["truth"]["det_from_markers"] == len(manifest["ids"])
    assert q["truth"]["ap_note"] == PARTIAL_AP_NOTE
    for row in q["per_image"]:
        c = row["ctc"]
        assert c["det_reference"] == "markers"
        assert c["truth_complete"] == (row["image_id"] not in ("01_t003", "02_t003"))
        labels = read_label_map(root / "labels" / f"{row['image_id']}.png")
        markers = read_label_map(root / manifest["markers"][row["image_id"]])
        # SEG: exactly the CTC SEG of the annotated objects against the painted prediction
        silver_map = _prediction_map(pred, row["image_id"], labels.shape)
        assert c["seg"] == ctc_measures(labels, silver_map)["seg"] and c["n_gt"] == len(np.unique(labels)) - 1
        # DET: against the markers, every cell found: no miss and no false positive
        assert c["n_markers"] == len(np.unique(markers)) - 1 and c["fn"] == 0 and c["fp"] == 0 and c["det"] == 1.0
    # against the partial label maps the unannotated cells would have been false positives
    t3 = [r for r in q["per_image"] if r["image_id"] == "01_t003"][0]
    labels = read_label_map(root / "labels" / "01_t003.png")
    assert ctc_measures(labels, _prediction_map(pred, "01_t003", labels.shape))["fp"] == 2 > t3["ctc"]["fp"]
    # the miniature's gold masks are its silver ones where annotated: perfect SEG, unannotated cells ignored
    assert q["ctc"]["det"] == 1.0 and q["ctc"]["seg"] == 1.0


def test_ap_is_flagged_on_partial_truth(hela):
    root, pred, _ = hela
    m = score_predictions(root, pred)
    assert m["ap_note"] == PARTIAL_AP_NOTE and m["truth"] == {"images": 4, "partial": 2}
    assert [r["truth_complete"] for r in m["per_image"]] == [True, False, True, False]
    # the flag is earned: a method finding every cell still gets false positives from the unannotated ones
    assert m["counts"]["tp_seg"][0] < m["counts"]["predictions"]


def test_table3_says_which_measures_apply(hela, tmp_path):
    root, pred, _ = hela
    m = score_predictions(root, pred)
    run = {"dataset": "hela-gold", "method": "objguided", "variant": "default", "seed": 0, "label": "objguided",
           "paper_dataset": "Fluo-N2DL-HeLa", "paper_method": "objguided", "metrics": m, "speed": None}
    write_tables34([run], tmp_path, PAPER_DIR)
    md = (tmp_path / "table3.md").read_text()
    print(md)
    assert "## Which measures apply" in md
    line = next(x for x in md.splitlines() if x.startswith("| Fluo-N2DL-HeLa") and "partial" in x)
    assert "partial on 2 of 4 images" in line and "over the annotated objects" in line
    assert "from TRA markers (4 of 4 images)" in line and PARTIAL_AP_NOTE in line
    t3 = pd.read_csv(tmp_path / "table3.csv")
    assert t3.loc[0, "det"] == 1.0


def _prediction_map(pred: Path, image_id: str, shape) -> np.ndarray:
    import json

    from objguided.metrics.coco import decode_mask

    recs = [r for r in json.loads(pred.read_text()) if r["image_id"] == image_id]
    return instances_to_label_map([decode_mask(r["segmentation"]) for r in recs], [r["score"] for r in recs], shape)
