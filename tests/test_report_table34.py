"""Tables III (CTC) and IV (CVPPP LSC) from run records holding ``metrics["quality"]``."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from objguided.data.canonical import write_label_map
from objguided.errors import DataError
from objguided.metrics.coco import encode_instances, write_predictions
from objguided.metrics.quality import quality_from_predictions
from objguided.report.table34 import (
    TABLE3_COLUMNS,
    TABLE4_COLUMNS,
    build_table3,
    build_table4,
    read_paper_table3,
    read_paper_table4,
    table3_markdown,
    write_tables34,
)

PAPER_DIR = Path(__file__).resolve().parents[1] / "paper"
AP = {"thresholds": [0.5], "ap_seg": [0.5], "ap_dec": [0.5], "ap_seg_mean": 0.5, "ap_dec_mean": 0.5,
      "ap_seg_50": 0.5, "ap_seg_75": 0.5}


def quality(seg=None, det=None, cvppp=None, groups=None, images=10):
    ctc = {"seg": seg, "det": det, "op_csb": None if seg is None or det is None else (seg + det) / 2,
           "images": images}
    cv = {"best_dice": 0.8, "abs_diff_fg": 1.0, "diff_fg": -0.5, "fg_bg_dice": 0.9, "images": images}
    cv.update(cvppp or {})
    return {"ctc": ctc, "cvppp": cv, "images": images, "groups": groups or {}}


def run(dataset, seed, q, paper_dataset, method="objguided", variant="default", label=None):
    metrics = dict(AP)
    if q is not None:
        metrics["quality"] = q
    return {"dataset": dataset, "method": method, "variant": variant, "seed": seed, "label": label or method,
            "paper_dataset": paper_dataset, "paper_method": "objguided", "metrics": metrics, "speed": None}


def test_paper_tables_read():
    t3, t4 = read_paper_table3(PAPER_DIR / "table3.csv"), read_paper_table4(PAPER_DIR / "table4.csv")
    assert t3["dataset"].tolist() == ["Fluo-N2DL-HeLa", "PhC-C2DH-U373", "PhC-C2DL-PSC"]
    assert t3.loc[0, "seg"] == 0.863 and t3.loc[0, "op_csb_top"] == 0.953
    assert t4["dataset"].tolist() == ["A1", "A2", "A3", "A4", "A5", "mean"]
    assert t4.loc[2, "diff_fg"] == -0.23


def test_paper_table_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_paper_table3(tmp_path / "table3.csv")
    (tmp_path / "t.csv").write_text("dataset,seg\nA,0.5\n")
    with pytest.raises(DataError, match="missing column"):
        read_paper_table3(tmp_path / "t.csv")
    (tmp_path / "t4.csv").write_text("dataset,best_dice,abs_diff_fg,diff_fg,fg_bg_dice\nA1,x,1,1,1\n")
    with pytest.raises(DataError, match="non-number"):
        read_paper_table4(tmp_path / "t4.csv")
    (tmp_path / "t4.csv").write_text("dataset,best_dice,abs_diff_fg,diff_fg,fg_bg_dice\nA1,1,1,1,1\nA1,1,1,1,1\n")
    with pytest.raises(DataError, match="repeated"):
        read_paper_table4(tmp_path / "t4.csv")


def test_nothing_written_without_a_qualifying_run(tmp_path):
    runs = [run("synth-nuclei", 0, quality(0.5, 0.5), None), run("dsb", 0, None, "dsb2018"),
            run("ctc-hela", 0, quality(0.5, 0.5), "hela")]  # not a row's name
    assert write_tables34(runs, tmp_path / "out", PAPER_DIR) == []
    assert not (tmp_path / "out").exists()
    assert write_tables34([], tmp_path / "out", PAPER_DIR) == []


def test_table3_seeds_averaged_beside_the_paper(tmp_path):
    runs = [run("ctc-hela", 0, quality(0.80, 0.90), "Fluo-N2DL-HeLa"),
            run("ctc-hela", 1, quality(0.84, 0.94), "Fluo-N2DL-HeLa"),
            run("ctc-hela", 0, quality(0.70, 0.60), "Fluo-N2DL-HeLa", method="watershed"),
            run("ctc-psc", 0, None, "PhC-C2DL-PSC"),  # scored without quality measures
            run("leaves", 0, quality(cvppp={}), "A1")]  # Table IV only
    df = build_table3(runs, read_paper_table3(PAPER_DIR / "table3.csv"))
    assert list(df.columns) == list(TABLE3_COLUMNS)
    assert df["paper_dataset"].tolist() == ["Fluo-N2DL-HeLa", "Fluo-N2DL-HeLa", "PhC-C2DH-U373", "PhC-C2DL-PSC"]
    ours = df.iloc[0]
    assert ours["label"] == "objguided" and ours["n_seeds"] == 2 and ours["n_scored"] == 2
    assert ours["seg"] == pytest.approx(0.82) and ours["det"] == pytest.approx(0.92)
    assert ours["op_csb"] == pytest.approx(0.87)
    assert ours["seg_std"] == pytest.approx(round(float(np.std([0.80, 0.84], ddof=1)), 4))
    assert ours["paper_seg"] == 0.863 and ours["paper_seg_top"] == 0.919 and ours["images"] == "10"
    assert df.iloc[1]["label"] == "watershed" and math.isnan(df.iloc[1]["seg_std"])
    assert not df.iloc[2]["has_run"] and math.isnan(df.iloc[2]["seg"]) and df.iloc[2]["paper_det"] == 0.976
    psc = df.iloc[3]
    assert psc["has_run"] and psc["n_scored"] == 0 and math.isnan(psc["op_csb"])

    md = table3_markdown(df, note="A note.")
    assert "> **A note.**" in md
    assert "0.820 ± 0.028 (paper 0.863; top 0.919)" in md
    assert "(no run)" in md and "not scored (paper 0.720; top 0.847)" in md
    assert "1 (0 scored)" in md

    written = write_tables34(runs, tmp_path, PAPER_DIR)
    assert [p.name for p in written] == ["table3.csv", "table3.md", "table4.csv", "table4.md"]
    back = pd.read_csv(tmp_path / "table3.csv")
    assert list(back.columns) == list(TABLE3_COLUMNS) and len(back) == 4
    assert (tmp_path / "table3.md").read_text() == table3_markdown(df)


def test_table4_from_a_combined_run_and_a_single_subset_run(tmp_path):
    groups = {"A1": {"cvppp": {"best_dice": 0.9, "abs_diff_fg": 0.5, "diff_fg": 0.25, "fg_bg_dice": 0.95,
                               "images": 4}, "images": 4},
              "A2": {"cvppp": {"best_dice": 0.7, "abs_diff_fg": 2.0, "diff_fg": -2.0, "fg_bg_dice": 0.85,
                               "images": 2}, "images": 2}}
    runs = [run("lsc", 0, quality(cvppp={"best_dice": 0.83, "images": 6}, groups=groups, images=6), "lsc"),
            run("lsc-a3", 0, quality(cvppp={"best_dice": 0.6}, images=3), "A3", method="watershed")]
    df = build_table4(runs, read_paper_table4(PAPER_DIR / "table4.csv"))
    assert list(df.columns) == list(TABLE4_COLUMNS)
    by = {r["paper_dataset"]: r for r in df.to_dict("records")}
    assert by["A1"]["best_dice"] == 0.9 and by["A1"]["images"] == "4" and by["A1"]["paper_best_dice"] == 0.88
    assert by["A2"]["diff_fg"] == -2.0
    assert by["A3"]["label"] == "watershed" and by["A3"]["best_dice"] == 0.6
    assert not by["A4"]["has_run"] and not by["A5"]["has_run"]
    assert by["mean"]["best_dice"] == 0.83 and by["mean"]["images"] == "6" and by["mean"]["paper_best_dice"] == 0.85
    written = write_tables34(runs, tmp_path, PAPER_DIR)
    assert [p.name for p in written] == ["table4.csv", "table4.md"]  # no Table III run
    md = (tmp_path / "table4.md").read_text()
    assert "0.90 (paper 0.88)" in md and "-2.00 (paper 0.11)" in md and "(no run)" in md


def test_tables_from_real_quality_measures(tmp_path):
    """End to end: quality_from_predictions' dict, as the score step stores it, feeds both tables."""
    gt = np.zeros((6, 6), np.int32)
    gt[0:3, 0:3] = 1
    gt[3:6, 3:6] = 2
    root = tmp_path / "gt"
    records = []
    for image_id in ("A1_plant001", "A2_plant001", "A2_plant002"):
        write_label_map(root / f"{image_id}.png", gt)
        records += encode_instances(image_id, [SimpleNamespace(mask=gt == 1, score=0.9, soft_area=None)])
    write_predictions(tmp_path / "p.json", records)
    q = quality_from_predictions(root, tmp_path / "p.json")
    runs = [run("lsc", 0, q, "cvppp"), run("hela", 0, q, "Fluo-N2DL-HeLa")]
    written = write_tables34(runs, tmp_path / "out", PAPER_DIR)
    assert len(written) == 4
    t3 = pd.read_csv(tmp_path / "out" / "table3.csv")
    assert t3.loc[0, "seg"] == 0.5 and t3.loc[0, "det"] == 0.5 and t3.loc[0, "images"] == 3
    t4 = pd.read_csv(tmp_path / "out" / "table4.csv").set_index("paper_dataset")
    assert t4.loc["A1", "diff_fg"] == -1 and t4.loc["A2", "images"] == 2 and t4.loc["mean", "images"] == 3
    assert t4.loc["A1", "best_dice"] == 0.5 and t4.loc["A1", "fg_bg_dice"] == pytest.approx(2 / 3, abs=1e-4)


def test_bad_run_records():
    paper3 = read_paper_table3(PAPER_DIR / "table3.csv")
    bad = run("ctc-hela", 0, {"ctc": {"seg": "high", "det": 0.5, "op_csb": 0.5}}, "Fluo-N2DL-HeLa")
    with pytest.raises(DataError, match="'seg' must be a number"):
        build_table3([bad], paper3)
    with pytest.raises(DataError, match="missing key 'op_csb'"):
        build_table3([run("h", 0, {"ctc": {"seg": 0.5}}, "Fluo-N2DL-HeLa")], paper3)
    with pytest.raises(DataError, match="'quality' must be a dict"):
        build_table3([run("h", 0, [1], "Fluo-N2DL-HeLa")], paper3)
    twice = run("h", 0, quality(0.5, 0.5), "Fluo-N2DL-HeLa")
    with pytest.raises(DataError, match="given twice"):
        build_table3([twice, dict(twice)], paper3)
    a = run("h", 0, quality(0.5, 0.5), "Fluo-N2DL-HeLa", label="x")
    b = run("h", 1, quality(0.5, 0.5), "Fluo-N2DL-HeLa", method="other", label="x")
    with pytest.raises(DataError, match="disagree on method"):
        build_table3([a, b], paper3)
    with pytest.raises(DataError, match="missing key"):
        build_table3([{"dataset": "h"}], paper3)
    with pytest.raises(DataError, match="paper table not found"):
        write_tables34([a], "/nonexistent-out", "/nonexistent-paper")
