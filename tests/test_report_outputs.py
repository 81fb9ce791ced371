"""Table II, Figure 4, the Figure 5 seed band, report.html and the whole `report` verb on tiny hand-made runs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from objguided.cli import main
from objguided.errors import DataError
from objguided.metrics.score import score_predictions
from objguided.report.build import build_report, report_files
from objguided.report.fig4 import Panel, make_fig4, plot_fig4
from objguided.report.fig5 import make_fig5
from objguided.report.html import provenance_rows, read_provenance
from objguided.report.table2 import build_table2, read_paper_table2, strategy_of, table2_markdown, write_table2

REPO = Path(__file__).resolve().parents[1]
PAPER_TABLE2 = REPO / "paper" / "table2.csv"

_spec = importlib.util.spec_from_file_location("_boot", Path(__file__).with_name("test_report_bootstrap.py"))
boot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(boot)


# --- Table II ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper2():
    return read_paper_table2(PAPER_TABLE2)


def _m(ap_seg_mean):
    return {"thresholds": [0.5], "ap_seg": [ap_seg_mean], "ap_dec": [0.0], "ap_seg_mean": ap_seg_mean,
            "ap_dec_mean": 0.0, "ap_seg_50": ap_seg_mean, "ap_seg_75": 0.0, "per_image": []}


def _r(dataset, method, variant, seed, params, ap_seg_mean, paper_dataset="dsb2018", label=None):
    return {"dataset": dataset, "method": method, "variant": variant, "seed": seed, "label": label or variant,
            "paper_dataset": paper_dataset, "paper_method": None, "params": params, "metrics": _m(ap_seg_mean)}


def test_read_paper_table2(paper2):
    assert len(paper2) == 27 and list(paper2.columns) == ["dataset", "strategy", "k", "beta", "ap_seg"]
    row = paper2[(paper2.dataset == "plant") & (paper2.strategy == "moderately biased")].iloc[0]
    assert (row.k, row.beta, row.ap_seg) == (3.0, 0.75, 76.71)
    assert math.isnan(paper2.k.iloc[0])


def test_strategy_mapping(paper2):
    from objguided.report.table2 import strategies

    rows = strategies(paper2)
    assert [r[0] for r in rows][:3] == ["w.o. sampling", "uniform small", "biased small"] and len(rows) == 9
    assert strategy_of({"refine": False, "k": 1.0}, rows) == "w.o. sampling"  # no refinement: k is moot
    assert strategy_of({}, rows) == "moderately biased"  # the method's defaults k 3, beta 0.75
    assert strategy_of({"k": 10.0, "beta": 0.75}, rows) == "heavily biased"
    assert strategy_of({"k": 1, "beta": 0.5, "backbone": "resnet18"}, rows) == "biased small"
    assert strategy_of({"k": 2.0, "beta": 0.5}, rows) is None
    assert strategy_of({"faithful_to": "code"}, rows) is None  # the authors' code path is no ablation row


def test_table2_rows_and_missing(paper2, tmp_path):
    runs = [
        _r("synth-nuclei", "objguided", "norefine", 0, {"refine": False}, 0.40),
        _r("synth-nuclei", "objguided", "norefine", 1, {"refine": False}, 0.42),
        _r("synth-nuclei", "objguided", "refine", 0, {"backbone": "resnet18"}, 0.50),
        _r("synth-nuclei", "objguided", "heavily_biased", 0, {"k": 10.0, "beta": 0.75}, 0.55),
        _r("synth-nuclei", "objguided", "code", 0, {"faithful_to": "code"}, 0.99),  # left out
        _r("synth-nuclei", "watershed", "default", 0, {}, 0.30),  # not the method: left out
        _r("synth-x", "watershed", "default", 0, {}, 0.30, paper_dataset=None),  # no objguided run at all
    ]
    df = build_table2(runs, paper2, bootstrap=None)
    assert list(df.dataset.unique()) == ["synth-nuclei", "synth-x"]
    nuc = df[df.dataset == "synth-nuclei"].set_index("strategy")
    assert len(nuc) == 9 and list(nuc.index[:2]) == ["w.o. sampling", "uniform small"]
    assert nuc.loc["w.o. sampling"].ap_seg == 41.0 and nuc.loc["w.o. sampling"].n_seeds == 2
    assert nuc.loc["w.o. sampling"].ap_seg_std == pytest.approx(round(np.std([40, 42], ddof=1), 2))
    assert nuc.loc["w.o. sampling"].paper_ap_seg == 61.14
    assert nuc.loc["moderately biased"].ap_seg == 50.0 and nuc.loc["moderately biased"].variant == "refine"
    assert nuc.loc["heavily biased"].ap_seg == 55.0 and nuc.loc["heavily biased"].paper_ap_seg == 61.46
    missing = nuc.loc["uniform"]
    assert missing.n_seeds == 0 and math.isnan(missing.ap_seg) and missing.paper_ap_seg == 60.57
    assert 99.0 not in nuc.ap_seg.tolist()
    x = df[df.dataset == "synth-x"]
    assert len(x) == 9 and (x.n_seeds == 0).all() and x.paper_ap_seg.isna().all()  # nothing invented

    text = table2_markdown(df)
    assert "## synth-nuclei (paper: dsb2018)" in text and "## synth-x (no paper numbers)" in text
    line = next(s for s in text.splitlines() if s.startswith("| uniform ") and "60.57" in s)
    assert "no run" in line
    assert "41.00 ± 1.41" in text
    write_table2(df, tmp_path / "t2.csv", tmp_path / "t2.md", tmp_path / "t2.html")
    back = pd.read_csv(tmp_path / "t2.csv")
    assert len(back) == 18 and back.n_seeds.sum() == 4
    assert 'class="missing"' in (tmp_path / "t2.html").read_text()


def test_table2_two_variants_on_one_row(paper2):
    runs = [_r("d", "objguided", "refine", 0, {}, 0.5), _r("d", "objguided", "again", 0, {"k": 3, "beta": 0.75}, 0.6)]
    df = build_table2(runs, paper2, bootstrap=None)
    rows = df[df.strategy == "moderately biased"]
    assert rows.variant.tolist() == ["refine", "again"] and len(df) == 10


# --- Figures ------------------------------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny dataset (8 test images) and two methods: 'good' with two seeds, 'bad' with one; all scored."""
    root = tmp_path_factory.mktemp("tiny")
    data, ids = boot.make_data(root / "data")
    runs = []
    for method, seeds, offset in (("good", (0, 1), 100), ("bad", (0,), 200)):
        for seed in seeds:
            run_dir = root / "results" / "toy" / method / "default" / f"seed{seed}"
            run_dir.mkdir(parents=True)
            pred = boot.make_predictions(data, ids, run_dir / "predictions.json", seed=offset + seed)
            metrics = score_predictions(data, pred, split_path=data / "split.json", subset="test", extras=False)
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
            for log in ("train.log", "predict.log"):  # no score.log: shown as missing
                (run_dir / log).write_text(f"{log} of {method} seed {seed}\n")
            _save_model(run_dir / "model.pt", seed)
            runs.append({"dataset": "toy", "method": method, "variant": "default", "seed": seed, "label": method,
                         "paper_dataset": None, "paper_method": None, "dir": str(run_dir),
                         "params": {"lr": 0.001 * (seed + 1)}})
    return {"root": root, "data": data, "ids": ids, "runs": runs}


def _save_model(path: Path, seed: int) -> None:
    import torch

    prov = {"git_commit": f"deadbeef{seed}", "config_hash": f"cafe{seed:04d}", "seed": seed,
            "device": "cpu (toy)", "cuda": None, "packages": {"python": "3.11.7", "torch": "9.9.9"},
            "host": "toyhost", "time": "2026-01-01T00:00:00+00:00"}
    torch.save({"format": "objguided-model/1", "method": "toy", "params": {}, "state": None,
                "train_seconds": 12.5, "provenance": prov}, path)


def test_fig4_panels(tiny, tmp_path):
    from objguided.report.fig4 import fig4_images, read_panels

    images = fig4_images(tiny["data"], tiny["data"] / "split.json", "test", 2)
    assert [i for i, _, _ in images] == tiny["ids"][:2]  # the first ids of the split, in order
    columns = [(lab, read_panels(Path(r["dir"]) / "predictions.json", tiny["ids"][:2]))
               for lab, r in (("good", tiny["runs"][0]), ("bad", tiny["runs"][2]))]
    assert all(isinstance(p, Panel) for _, c in columns for p in c.values())
    fig = make_fig4("toy", images, columns, score_threshold=0.5)
    assert len(fig.axes) == 2 * 3  # 2 images x (ground truth + 2 methods)
    assert fig.axes[0].get_title() == "Ground truth" and fig.axes[1].get_title() == "good\n(score ≥ 0.5)"
    captions = [t.get_text() for ax in fig.axes for t in ax.texts]
    n_shown = sum(s >= 0.5 for s in columns[0][1][tiny["ids"][0]].scores)
    assert f"{n_shown} of {columns[0][1][tiny['ids'][0]].total} shown" in captions

    png, pdf = tmp_path / "f" / "fig4_toy.png", tmp_path / "f" / "fig4_toy.pdf"
    plot_fig4("toy", {"dir": str(tiny["data"]), "split": str(tiny["data"] / "split.json"), "subset": "test"},
              [dict(r) for r in tiny["runs"]], png, pdf, n_images=3)
    w, h = _png_size(png)
    # 3 columns (GT, good, bad) by 3 rows of 1.9-inch panels at 150 dpi, plus margins and the title (2 lines)
    assert w == round((1.9 * 3 + 0.4) * 150) and h == round((1.9 * 3 + 0.75 + 0.18) * 150)
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert sorted(p.name for p in png.parent.iterdir()) == ["fig4_toy.pdf", "fig4_toy.png"]


def test_fig4_overlay_draws_fill_and_contour():
    from objguided.report.fig4 import overlay

    image = np.zeros((9, 9), np.uint8)
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    out = overlay(image, [mask])
    assert out.shape == (9, 9, 3) and (out[~mask] == 0).all()  # untouched outside
    edge, inside = out[2, 4], out[4, 4]
    assert edge.sum() > inside.sum() > 0  # opaque contour, translucent fill
    with pytest.raises(DataError, match="mask of size"):
        overlay(image, [np.zeros((3, 3), bool)])


def test_fig5_band_with_two_seeds(tiny):
    from objguided.report.runs import load_run

    runs = [load_run(r["dir"], r["dataset"], r["method"], r["variant"], r["seed"], r["label"]) for r in tiny["runs"]]
    fig = make_fig5(runs)
    ax = fig.axes[0]
    assert len(ax.lines) == 2  # one line per label
    assert len(ax.collections) == 1  # a band only for 'good', the label with two seeds
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    aps = np.array([[100 * v for v in r["metrics"]["ap_seg"]] for r in runs[:2]])
    assert band.min() == pytest.approx(aps.min()) and band.max() == pytest.approx(aps.max())
    mean_line = ax.lines[0].get_ydata()
    np.testing.assert_allclose(mean_line, aps.mean(axis=0))
    assert "min-max over seeds (line: mean)" in [t.get_text() for t in fig.legends[0].get_texts()]


# --- report.html and the verb -------------------------------------------------------------------------------


def test_provenance_from_model(tiny, tmp_path):
    prov, source = read_provenance(tiny["runs"][1]["dir"])
    assert source == "model.pt" and prov["git_commit"] == "deadbeef1" and prov["train_seconds"] == 12.5
    rows = dict(provenance_rows(prov))
    assert rows["packages"] == "python 3.11.7, torch 9.9.9" and rows["seed"] == "1"
    # no model file: the score step's provenance, said so
    (tmp_path / "metrics.json").write_text(json.dumps({"provenance": {"git_commit": "abc"}}))
    prov, source = read_provenance(tmp_path)
    assert prov["git_commit"] == "abc" and source.startswith("metrics.json")
    assert read_provenance(tmp_path / "nothing") == (None, "none found")


def _spec(tiny, **extra):
    return {"runs": tiny["runs"],
            "datasets": {"toy": {"dir": str(tiny["data"]), "split": str(tiny["data"] / "split.json"),
                                 "subset": "test"}},
            "paper_table1": str(REPO / "paper" / "table1.csv"), "paper_table2": str(PAPER_TABLE2),
            "note": "Toy runs <not comparable>", "bootstrap": {"resamples": 200}} | extra


def test_build_report_writes_every_file_and_links(tiny):
    out = tiny["root"] / "results" / "report"
    written = build_report(_spec(tiny), out)
    assert sorted(p.name for p in written) == sorted(report_files(["toy"]))
    assert sorted(p.name for p in out.iterdir()) == sorted(report_files(["toy"]))  # no temporary files left
    page = (out / "report.html").read_text()
    assert "<script" not in page and "stylesheet" not in page and 'href="http' not in page
    assert "Toy runs &lt;not comparable&gt;" in page
    for r in tiny["runs"]:
        rel = f"../toy/{r['method']}/default/seed{r['seed']}"
        for name in ("train.log", "predict.log", "metrics.json", "predictions.json", "model.pt"):
            assert f'href="{rel}/{name}"' in page, (rel, name)
            assert (out / rel / name).exists()
        assert f"deadbeef{r['seed']}" in page and f"cafe{r['seed']:04d}" in page
    assert page.count("score.log (missing)") == 3
    assert "toyhost" in page and "torch 9.9.9" in page and "cpu (toy)" in page
    # what every run shares is shown once; each card keeps what differs (commit, config hash, seed)
    assert page.count("toyhost") == 1 and page.count("torch 9.9.9") == 1 and "Shared by all 3 runs" in page
    assert page.count("deadbeef0") == 2  # the two seed-0 runs
    for section in ("vs-paper", "table1", "fig4", "errors", "fig5", "losses", "runs"):
        assert f'<section id="{section}">' in page, section
    for name in ("ours_vs_paper.png", "errors_toy.png", "loss_curves_toy.png", "table1.tex"):
        assert f'"{name}"' in page, name
    for name in ("fig4_toy.png", "fig5.png", "table1.csv", "table2.csv", "extra_metrics.csv"):
        assert f'"{name}"' in page, name
    assert "<h2>Extra metrics (not the paper's protocol)</h2>" in page
    assert "95% CI [" in page  # Table I holds intervals: the runs carry match data
    assert "&quot;lr&quot;: 0.002" in page  # the variant's parameters
    table1 = pd.read_csv(out / "table1.csv")
    assert (table1.ci_images == 8).all() and table1.ap_seg_ci_low.notna().all()
    assert "No interval" not in (out / "table1.md").read_text()


def test_report_verb_backward_compatible(tiny, tmp_path):
    """Old metrics.json (no match data), a spec without params, datasets or Table II: still a report."""
    runs = []
    for r in tiny["runs"]:
        old_dir = tmp_path / "old" / r["method"] / f"seed{r['seed']}"
        old_dir.mkdir(parents=True)
        m = json.loads((Path(r["dir"]) / "metrics.json").read_text())
        for row in m["per_image"]:
            for key in ("pred_scores", "pred_tp_seg", "pred_tp_dec"):
                row.pop(key)
        (old_dir / "metrics.json").write_text(json.dumps(m))
        runs.append({k: r[k] for k in ("dataset", "method", "variant", "seed", "label")} | {"dir": str(old_dir)})
    spec = {"runs": runs, "paper_table1": None, "note": None}
    out = tmp_path / "report"
    assert main(["report", "--runs", json.dumps(spec), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(report_files([], table2=False))
    assert "No interval for any row" in (out / "table1.md").read_text()
    page = (out / "report.html").read_text()
    assert "No interval for any row" in page and "Not built: the report spec names no paper Table II" in page
    assert "parameters: not in the report spec" in page and "none found" in page


def test_report_verb_names_a_broken_run(tiny, tmp_path):
    spec = _spec(tiny)
    spec["runs"] = [dict(spec["runs"][0], dir=str(tmp_path / "absent"))]
    assert main(["report", "--runs", json.dumps(spec), "--out", str(tmp_path / "r")]) == 2
