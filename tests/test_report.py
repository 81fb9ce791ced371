"""Report builders: Table I and Figure 5 from hand-made run records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from objguided.errors import DataError
from objguided.report import build_table1, load_run, plot_fig5, read_paper_table1, read_table1, write_table1

REPO = Path(__file__).resolve().parents[1]
PAPER_TABLE1 = REPO / "paper" / "table1.csv"
NOTE = "Demo on synthetic data: not comparable with the paper"
THRESHOLDS = [float(t) for t in np.linspace(0.5, 0.95, 10)]


def metrics(ap_seg_mean, ap_dec_mean, ap_seg_50, ap_seg_75):
    """A metrics.json dict whose APseg curve falls linearly from ap_seg_50 to 0 (AP as fractions)."""
    curve = [ap_seg_50 * (1 - i / 10) for i in range(10)]
    curve[5] = ap_seg_75
    return {
        "thresholds": THRESHOLDS,
        "ap_seg": curve,
        "ap_dec": [ap_dec_mean] * 10,
        "ap_seg_mean": ap_seg_mean,
        "ap_dec_mean": ap_dec_mean,
        "ap_seg_50": ap_seg_50,
        "ap_seg_75": ap_seg_75,
        "counts": {"images": 4, "gt_kept": 40, "gt_dropped": 0, "predictions": 38, "tp_seg": 30, "tp_dec": 31},
        "extra": {"coco_ap_seg": None, "dsb_score": None},
        "per_image": [],
        "evaluator": {},
        "provenance": {},
    }


def speed(fps, device="cpu"):
    return {"fps": fps, "mean_seconds": 1 / fps, "per_image_seconds": [1 / fps] * 4, "device": device,
            "n_images": 4, "torch": "2.3", "cuda": None}


def run(dataset, method, seed, m, s, variant="default", paper_dataset=None, paper_method=None):
    label = method if variant == "default" else f"{method}/{variant}"
    return {"dataset": dataset, "method": method, "variant": variant, "seed": seed, "label": label,
            "paper_dataset": paper_dataset, "paper_method": paper_method, "metrics": m, "speed": s}


@pytest.fixture
def runs():
    """Two datasets, three methods; objguided/norefine has two seeds on synth-nuclei."""
    return [
        run("synth-nuclei", "watershed", 0, metrics(0.30, 0.25, 0.60, 0.20), speed(12.0),
            paper_dataset="dsb2018", paper_method=None),
        run("synth-nuclei", "objguided", 0, metrics(0.6125, 0.5095, 0.8556, 0.6522), speed(2.0),
            variant="norefine", paper_dataset="dsb2018", paper_method="objguided_norefine"),
        run("synth-nuclei", "objguided", 1, metrics(0.6325, 0.5195, 0.8756, 0.6722), speed(4.0),
            variant="norefine", paper_dataset="dsb2018", paper_method="objguided_norefine"),
        run("synth-nuclei", "cosine", 0, metrics(0.05, 0.04, 0.15, 0.01), None,
            paper_dataset="dsb2018", paper_method="cosine_embedding"),
        run("synth-cells", "objguided", 0, metrics(0.40, 0.35, 0.70, 0.45), speed(3.0, "cuda:0 (NVIDIA H100)"),
            variant="norefine"),
        run("synth-cells", "watershed", 0, metrics(0.20, 0.15, 0.50, 0.10), speed(10.0, "cuda:0 (NVIDIA H100)")),
    ]


@pytest.fixture
def paper():
    return read_paper_table1(PAPER_TABLE1)


def test_read_paper_table1(paper):
    assert list(paper.columns) == ["dataset", "method", "ap_dec", "ap_seg", "ap_seg_50", "ap_seg_75", "fps"]
    assert len(paper) == 21
    row = paper[(paper.dataset == "dsb2018") & (paper.method == "objguided")].iloc[0]
    assert row.ap_seg == pytest.approx(61.25)
    assert math.isnan(paper[(paper.dataset == "plant") & (paper.method == "cosine_embedding")].fps.iloc[0])


def test_read_paper_table1_errors(tmp_path):
    with pytest.raises(DataError, match="nope.csv"):
        read_paper_table1(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,method,ap_dec\ndsb2018,dcan,1\n")
    with pytest.raises(DataError, match="missing column"):
        read_paper_table1(bad)
    bad.write_text("dataset,method,ap_dec,ap_seg,ap_seg_50,ap_seg_75,fps\nd,m,1,x,1,1,1\n")
    with pytest.raises(DataError, match="ap_seg"):
        read_paper_table1(bad)


def test_table1_rows_and_order(runs, paper):
    df = build_table1(runs, paper)
    assert list(zip(df.dataset, df.label)) == [  # datasets in first-seen order, each a leaderboard by APseg
        ("synth-nuclei", "objguided/norefine"), ("synth-nuclei", "watershed"), ("synth-nuclei", "cosine"),
        ("synth-cells", "objguided/norefine"), ("synth-cells", "watershed"),
    ]
    assert list(df.n_seeds) == [2, 1, 1, 1, 1]


def test_table1_values(runs, paper):
    df = build_table1(runs, paper).set_index(["dataset", "label"])
    ws = df.loc[("synth-nuclei", "watershed")]
    assert ws.ap_seg == 30.0 and ws.ap_dec == 25.0 and ws.ap_seg_50 == 60.0 and ws.ap_seg_75 == 20.0
    assert ws.fps == 12.0 and ws.device == "cpu"
    assert math.isnan(ws.ap_seg_std)  # one seed: no std
    # seed mean and sample std, percent, 2 decimals
    og = df.loc[("synth-nuclei", "objguided/norefine")]
    assert og.ap_seg == 62.25 and og.ap_dec == 51.45 and og.ap_seg_50 == 86.56 and og.ap_seg_75 == 66.22
    assert og.ap_seg_std == pytest.approx(round(np.std([61.25, 63.25], ddof=1), 2))
    assert og.fps == 3.0 and og.fps_std == pytest.approx(1.41)
    # paper join
    assert og.in_paper
    assert (og.paper_ap_dec, og.paper_ap_seg, og.paper_ap_seg_50, og.paper_ap_seg_75, og.paper_fps) == (
        50.41, 61.14, 84.85, 65.14, 3.22)
    # no paper_method -> NaN; no paper_dataset -> NaN
    for key in [("synth-nuclei", "watershed"), ("synth-cells", "objguided/norefine")]:
        row = df.loc[key]
        assert not row.in_paper
        assert all(math.isnan(row[f"paper_{v}"]) for v in ("ap_dec", "ap_seg", "ap_seg_50", "ap_seg_75", "fps"))
    # paper row with empty fps (> 1 min per image); no speed.json of ours
    cos = df.loc[("synth-nuclei", "cosine")]
    assert cos.in_paper and cos.paper_ap_seg == 3.36 and math.isnan(cos.paper_fps)
    assert math.isnan(cos.fps) and pd.isna(cos.device)


def test_table1_without_paper(runs):
    df = build_table1(runs, None)
    assert df.paper_ap_seg.isna().all() and not df.in_paper.any()


def test_table1_rejects_bad_runs(runs, paper):
    with pytest.raises(DataError, match="given twice"):
        build_table1(runs + [runs[0]], paper)
    broken = dict(runs[0], metrics={"thresholds": THRESHOLDS})
    with pytest.raises(DataError, match="missing key"):
        build_table1([broken], paper)
    clash = dict(runs[2], seed=7, paper_method="mask_rcnn")
    with pytest.raises(DataError, match="disagree on paper_method"):
        build_table1(runs + [clash], paper)


def test_write_table1(runs, paper, tmp_path):
    df = build_table1(runs, paper)
    csv, md = tmp_path / "out" / "table1.csv", tmp_path / "out" / "table1.md"
    tex = tmp_path / "out" / "table1.tex"
    write_table1(df, csv, md, note=NOTE, tex_path=tex)
    back = read_table1(csv)
    assert list(back.columns) == list(df.columns)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert sorted(p.name for p in csv.parent.iterdir()) == ["table1.csv", "table1.md", "table1.tex"]

    text = md.read_text()
    assert text.index("Demo on synthetic data") < text.index("## synth-nuclei")
    assert "## synth-nuclei (stands for the paper's dsb2018)" in text
    assert "## synth-cells (no paper numbers)" in text
    assert "**62.25** ± 1.41 (paper 61.14)" in text  # the best APseg of synth-nuclei, in bold
    assert "3.00 ± 1.41 (paper 3.22)" in text  # not the fastest: not bold
    assert "FPS [cpu]" in text and "FPS [cuda:0 (NVIDIA H100)]" in text
    assert "(paper: >1 min/image)" in text
    lines = text.splitlines()
    ws = next(line for line in lines if line.startswith("| watershed") and "30.00" in line)
    assert [c.strip() for c in ws.strip("|").split("|")] == ["watershed", "-", "1", "25.00", "30.00", "60.00",
                                                              "20.00", "**12.00**"]  # no paper value: nothing shown
    # LaTeX (pandas' Styler): one tabular per dataset, the same bold cells, rows in leaderboard order
    latex = tex.read_text()
    assert latex.count("\\begin{tabular}") == 2 and "\\toprule" in latex
    assert "\\textbf{62.25 ± 1.41 (61.14)}" in latex and "\\textbf{12.00}" in latex
    assert latex.index("objguided/norefine") < latex.index("watershed") < latex.index("cosine")
    # the same Markdown from the CSV read back
    write_table1(back, tmp_path / "b.csv", tmp_path / "b.md", note=NOTE)
    assert (tmp_path / "b.md").read_text() == text


def test_fig5_files(runs, tmp_path):
    png, pdf = tmp_path / "fig" / "fig5.png", tmp_path / "fig" / "fig5.pdf"
    plot_fig5(runs, png, pdf, title="Figure 5 (demo)")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > height > 300  # two panels side by side
    assert pdf.read_bytes().startswith(b"%PDF-") and pdf.read_bytes().rstrip().endswith(b"%%EOF")
    assert pdf.stat().st_size > 5_000
    assert sorted(p.name for p in png.parent.iterdir()) == ["fig5.pdf", "fig5.png"]


def test_fig5_no_runs(tmp_path):
    with pytest.raises(DataError, match="no runs"):
        plot_fig5([], tmp_path / "a.png", tmp_path / "a.pdf")


def test_load_run(runs, tmp_path):
    run_dir = tmp_path / "results" / "synth-nuclei" / "watershed" / "default" / "seed0"
    run_dir.mkdir(parents=True)
    with pytest.raises(DataError, match=str(run_dir / "metrics.json")):
        load_run(run_dir, "synth-nuclei", "watershed", "default", 0, "watershed")
    (run_dir / "metrics.json").write_text(json.dumps(runs[0]["metrics"]))
    rec = load_run(run_dir, "synth-nuclei", "watershed", "default", 0, "watershed", "dsb2018", None)
    assert rec["speed"] is None and rec["metrics"] == runs[0]["metrics"] and rec["paper_dataset"] == "dsb2018"
    (run_dir / "speed.json").write_text(json.dumps(runs[0]["speed"]))
    rec = load_run(run_dir, "synth-nuclei", "watershed", "default", 0, "watershed")
    assert rec["speed"]["fps"] == 12.0
    assert build_table1([rec], None).fps.iloc[0] == 12.0
    (run_dir / "speed.json").write_text("{not json")
    with pytest.raises(DataError, match="speed.json"):
        load_run(run_dir, "synth-nuclei", "watershed", "default", 0, "watershed")
    (run_dir / "metrics.json").write_text('{"thresholds": [0.5]}')
    with pytest.raises(DataError, match="metrics.json: missing key"):
        load_run(run_dir, "synth-nuclei", "watershed", "default", 0, "watershed")


def test_table1_empty(tmp_path):
    df = build_table1([], None)
    assert df.empty and "ap_seg" in df.columns
    write_table1(df, tmp_path / "t.csv", tmp_path / "t.md")
    assert "No runs." in (tmp_path / "t.md").read_text()
