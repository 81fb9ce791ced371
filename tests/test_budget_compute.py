"""AP against compute (objguided/report/compute.py): the curves, who passes whom at which budget, the figure and
the report's entry, from a compute record shaped as benchmarks/cpu_dsb2018.py writes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from objguided.errors import DataError
from objguided.report.compute import ap_vs_compute_report, curves, first_rung_ahead, read_paper_points

REPO_PAPER = "paper/table1.csv"


def rung(budget, ours, mask_rcnn, watershed=0.30):
    """One rung: two budgeted methods (a little over the budget, as the trainer stops) and watershed (untimed)."""
    return {"budget_seconds": budget, "runs": {
        "objguided/refine": {"label": "Ours", "paper_method": "objguided", "ap_seg": ours,
                             "train_compute_seconds": budget * 1.01, "train_steps": int(budget)},
        "mask_rcnn/default": {"label": "Mask R-CNN", "paper_method": "mask_rcnn", "ap_seg": mask_rcnn,
                              "train_compute_seconds": budget * 1.02, "train_steps": int(budget / 2)},
        "watershed/default": {"label": "watershed", "paper_method": None, "ap_seg": watershed,
                              "train_compute_seconds": None}}}


RECORD = {"rungs": [rung(480, 0.35, 0.25), rung(120, 0.05, 0.10), rung(240, 0.15, 0.20)]}


def test_curves_follow_the_rungs_in_budget_order_at_the_compute_used():
    lines = curves(RECORD)
    assert [x for x, _ in lines["objguided/refine"]["points"]] == pytest.approx([2.02, 4.04, 8.08])
    assert [y for _, y in lines["mask_rcnn/default"]["points"]] == pytest.approx([10.0, 20.0, 25.0])
    assert lines["watershed/default"]["points"][0][0] is None


def test_first_budget_at_which_one_method_passes_another():
    assert first_rung_ahead(RECORD, "objguided/refine", "mask_rcnn/default") == 480
    assert first_rung_ahead(RECORD, "objguided/refine", "watershed/default") == 480
    assert first_rung_ahead(RECORD, "mask_rcnn/default", "watershed/default") is None


def test_the_report_entry_draws_the_figure_with_the_papers_points(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    paper = read_paper_points(repo / REPO_PAPER, "dsb2018")
    assert paper["objguided"] == pytest.approx(61.25) and "watershed" not in paper
    (tmp_path / "record.json").write_text(json.dumps(RECORD))
    png = ap_vs_compute_report(tmp_path / "record.json", tmp_path, repo / REPO_PAPER)
    image = np.asarray(Image.open(png).convert("L"))
    assert png.name == "ap_vs_compute.png" and image.shape[1] > 800 and image.std() > 10


def test_a_missing_or_empty_record_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="record.json.*cpu_dsb2018.py"):
        ap_vs_compute_report(tmp_path / "record.json", tmp_path, None)
    (tmp_path / "record.json").write_text('{"rungs": []}')
    with pytest.raises(DataError, match="no 'rungs'"):
        ap_vs_compute_report(tmp_path / "record.json", tmp_path, None)
