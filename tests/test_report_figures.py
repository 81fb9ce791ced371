"""The report's reproduction figures (issue 20): ours against the paper, loss curves, the error analysis, Figure 4
at each method's operating point, and a report folder that holds only the current config's files."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from objguided.metrics.coco import read_predictions, write_predictions
from objguided.metrics.score import score_predictions
from objguided.report import analysis
from objguided.report.bootstrap import matches_of
from objguided.report.build import build_report, report_files
from objguided.report.errors import make_errors_figure
from objguided.report.fig4 import plot_fig4
from objguided.report.losses import make_loss_figure
from objguided.report.runs import read_paper_table1
from objguided.report.table1 import build_table1
from objguided.report.vs_paper import make_vs_paper

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


boot, report_tests = _load("test_report_bootstrap"), _load("test_report")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Two scored runs on 8 test images: 'good' as made, 'timid' the same masks with every score x 0.3."""
    root = tmp_path_factory.mktemp("toy")
    data, ids = boot.make_data(root / "data")
    runs = []
    for label, scale in (("good", 1.0), ("timid", 0.3)):
        run_dir = root / "results" / "toy" / label / "default" / "seed0"
        run_dir.mkdir(parents=True)
        pred = boot.make_predictions(data, ids, run_dir / "predictions.json", seed=100)
        records = [r | {"score": r["score"] * scale} for r in read_predictions(pred)]
        write_predictions(pred, records)
        metrics = score_predictions(data, pred, split_path=data / "split.json", subset="test", extras=False)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        runs.append({"dataset": "toy", "method": label, "variant": "default", "seed": 0, "label": label,
                     "paper_dataset": None, "paper_method": None, "dir": str(run_dir), "metrics": metrics})
    spec = {"dir": str(data), "split": str(data / "split.json"), "subset": "test"}
    return {"root": root, "data": data, "ids": ids, "runs": runs, "spec": spec}


def test_operating_point_maximises_f1_at_iou_half(toy):
    m = matches_of(toy["runs"][0]["metrics"])
    point = analysis.operating_point(m)
    tp50 = m.tp["seg"][0]
    for t in np.unique(m.scores):  # no threshold does better, and the counts are those at its threshold
        keep = m.scores >= t
        tp = int((tp50 & keep).sum())
        assert 2 * tp / (keep.sum() + m.gt_kept.sum()) <= point.f1 + 1e-12
    keep = m.scores >= point.threshold
    assert (point.tp, point.fp) == (int((tp50 & keep).sum()), int((~tp50 & keep).sum()))
    assert point.fn == int(m.gt_kept.sum()) - point.tp


def test_image_aps_are_each_images_own_ap(toy, tmp_path):
    m = matches_of(toy["runs"][0]["metrics"])
    aps = analysis.image_aps(m)
    assert aps.shape == (len(toy["ids"]),) and ((0 <= aps) & (aps <= 1)).all()
    # an image's predictions alone, scored as a one-image test set, have the AP image_aps gives that image
    image_id = toy["ids"][3]
    records = [r for r in read_predictions(Path(toy["runs"][0]["dir"]) / "predictions.json")
               if r["image_id"] == image_id]
    write_predictions(tmp_path / "one.json", records)
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": [], "test": [image_id]}))
    alone = score_predictions(toy["data"], tmp_path / "one.json", split_path=tmp_path / "split.json",
                              subset="test", extras=False)
    assert aps[3] == pytest.approx(alone["ap_seg_mean"])


def test_fig4_draws_each_method_at_its_operating_point(toy, tmp_path):
    """Scores x 0.3 leave nothing at a fixed 0.5; at its operating point the timid method shows its masks."""
    png = tmp_path / "fig4.png"
    plot_fig4("toy", toy["spec"], toy["runs"], png, None, n_images=2)
    from objguided.report.fig4 import drawing_threshold, fig4_images, make_fig4, read_panels

    images = fig4_images(toy["data"], toy["spec"]["split"], "test", 2)
    panels = read_panels(Path(toy["runs"][1]["dir"]) / "predictions.json", toy["ids"][:2])
    threshold = drawing_threshold(toy["runs"][1], 0.5)
    assert threshold < 0.3
    fig = make_fig4("toy", images, [("timid", panels, threshold)])
    captions = [t.get_text() for ax in fig.axes for t in ax.texts]
    shown = [int(c.split(" of ")[0]) for c in captions if " shown" in c]
    assert sum(shown) > 0 and fig.axes[1].get_title().endswith(f"(score ≥ {threshold:.2g})")
    fixed = make_fig4("toy", images, [("timid", panels)], score_threshold=0.5)
    assert all(c.startswith("0 of") for ax in fixed.axes for t in ax.texts if " shown" in (c := t.get_text()))
    assert png.stat().st_size > 0


def test_error_panels_account_for_every_object(toy):
    from objguided.data.canonical import CanonicalDataset

    ds = CanonicalDataset(toy["data"], "test", toy["spec"]["split"])

    def reader(image_id):
        image = ds.image(image_id)
        return image, ds.labels(image_id, image.shape[:2])

    fig = make_errors_figure("toy", toy["runs"][:1], reader, n_worst=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 3
    aps = []
    for title in titles:
        image_id, ap, tp, fp, missed = re.match(r"(\S+): APseg ([\d.]+)%\nTP (\d+) · FP (\d+) · missed (\d+)",
                                                title).groups()
        aps.append(float(ap))
        n_gt = len(np.unique(reader(image_id)[1])) - 1
        assert int(tp) + int(missed) == n_gt  # each object is found (green) or missed (blue)
    assert aps == sorted(aps)  # worst first
    all_aps = 100 * analysis.image_aps(matches_of(toy["runs"][0]["metrics"]))
    assert aps[0] == pytest.approx(all_aps.min(), abs=0.05)


def _train_toy(run_dir: Path, steps: int) -> None:
    """A real losses.csv: the shared trainer fitting a one-weight model."""
    from objguided.engine.trainer import TrainConfig, fit

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    x = torch.linspace(0, 1, 8)[:, None]
    cfg = TrainConfig(epochs=steps, batch_size=8, lr=0.1, log_every=1, progress=False)
    fit(model, lambda epoch: [(x, 3 * x)], lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), cfg, run_dir)


def test_loss_curves_one_panel_per_method_seeds_overlaid(tmp_path):
    runs = []
    for label, seeds in (("learned", (0, 1)), ("classical", (0,))):
        for seed in seeds:
            run_dir = tmp_path / label / f"seed{seed}"
            run_dir.mkdir(parents=True)
            if label == "learned":
                _train_toy(run_dir, 5 + seed)
            runs.append({"label": label, "seed": seed, "dir": str(run_dir)})
    fig = make_loss_figure("toy", runs)
    learned, classical = fig.axes[:2]
    assert [len(line.get_xdata()) for line in learned.lines] == [5, 6]  # a row per step, one line per seed
    first = learned.lines[0].get_ydata()
    assert first[-1] < first[0]  # it learned
    assert "no losses.csv" in classical.texts[0].get_text()


def test_ours_vs_paper_places_each_row_at_paper_and_ours(tmp_path):
    paper = read_paper_table1(REPO / "paper" / "table1.csv")
    table = build_table1(_paper_runs(), paper, bootstrap=None)
    fig = make_vs_paper(table)
    ax = fig.axes[1]  # APseg
    assert ax.get_title() == "APseg"
    diagonal = ax.lines[0]
    assert list(diagonal.get_xdata()) == [0, 100] and list(diagonal.get_ydata()) == [0, 100]
    points = {(float(c.lines[0].get_xdata()[0]), float(c.lines[0].get_ydata()[0])): c for c in ax.containers}
    in_paper = table[table.in_paper]
    assert sorted(points) == sorted(zip(in_paper.paper_ap_seg, in_paper.ap_seg)) and len(points) == 2
    ours = in_paper.set_index("method").loc["objguided"]
    bar = points[(ours.paper_ap_seg, ours.ap_seg)].lines[2][0].get_segments()[0][:, 1]  # no interval: the seed std
    assert bar.tolist() == pytest.approx([ours.ap_seg - ours.ap_seg_std, ours.ap_seg + ours.ap_seg_std])


def _paper_runs():
    m = report_tests.metrics
    return [report_tests.run("synth-nuclei", "objguided", s, m(0.60 + s / 100, 0.5, 0.8, 0.6), None,
                             variant="norefine", paper_dataset="dsb2018", paper_method="objguided_norefine")
            for s in (0, 1)] + [
        report_tests.run("synth-nuclei", "cosine", 0, m(0.05, 0.04, 0.15, 0.01), None, paper_dataset="dsb2018",
                         paper_method="cosine_embedding"),
        report_tests.run("synth-nuclei", "watershed", 0, m(0.3, 0.2, 0.6, 0.2), None, paper_dataset="dsb2018")]


def test_report_folder_keeps_only_this_configs_files(toy, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    stale = ["fig4_other.png", "fig4_other.pdf", "table3.md", "table3.csv", "errors_other.png",
             "loss_curves_other.png"]
    for name in stale + ["my-notes.txt"]:
        (out / name).write_text("from another config")
    runs = [{k: v for k, v in r.items() if k != "metrics"} for r in toy["runs"]]
    spec = {"runs": runs, "datasets": {"toy": toy["spec"]}, "paper_table1": str(REPO / "paper" / "table1.csv"),
            "paper_table2": None, "note": None, "bootstrap": {"resamples": 50}}
    build_report(spec, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(report_files(["toy"], table2=False) + ["my-notes.txt"])
