"""AP against training compute: what each method scores after a given budget of CPU (or GPU) time.

The input is a compute record (``benchmarks/cpu_dsb2018.py`` writes one, ``cpu_dsb2018.json``)::

    {"rungs": [{"budget_seconds": 120.0,
                "runs": {"<method>/<variant>": {"label", "paper_method", "ap_seg" (fraction),
                                                 "train_compute_seconds" (null: no budgeted training), ...}
                                                 | {"unfinished": true, ...}}}]}   # not scored: left out

Each rung trains every learned method to the same budget by resuming the previous rung's runs. In the figure
each learned method is one line through its rungs, placed at the compute its steps actually used (the
trainer's clock stops at the first step past the budget); a method without budgeted training (watershed: a
grid search on val) is a horizontal line. Beside it, on an axis of its own, the paper's GPU numbers
(``paper/table1.csv``: full schedules, ImageNet weights where the paper used them) are the far end: the
trade-off a user with a given machine faces runs from the left panel to the right one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from objguided.errors import DataError


def read_paper_points(path: str | Path, dataset: str) -> dict[str, float]:
    """The paper's APseg (percent) per method on ``dataset``, from its Table I csv."""
    from objguided.report.runs import read_paper_table1

    table = read_paper_table1(path)
    rows = table[table["dataset"] == dataset]
    return {str(r["method"]): float(r["ap_seg"]) for _, r in rows.iterrows() if not math.isnan(r["ap_seg"])}


def curves(record: dict) -> dict[str, dict]:
    """Per run key: label, paper method and its points ``[(compute minutes or None, APseg percent)]`` by rung.

    >>> rung = lambda b, ap, c: {"budget_seconds": b, "runs": {"m/v": {"label": "M", "paper_method": "m",
    ...                          "ap_seg": ap, "train_compute_seconds": c}}}
    >>> curves({"rungs": [rung(120, 0.1, 121.0), rung(60, 0.05, 60.6)]})["m/v"]["points"]
    [(1.01, 5.0), (2.0166666666666666, 10.0)]
    """
    rungs = record.get("rungs")
    if not rungs:
        raise DataError("compute record: no 'rungs' (run benchmarks/cpu_dsb2018.py first)")
    out: dict[str, dict] = {}
    for rung in sorted(rungs, key=lambda r: r["budget_seconds"]):
        for key, run in rung["runs"].items():
            if run.get("unfinished"):  # a run a deadline stopped before it was scored
                continue
            entry = out.setdefault(key, {"label": run["label"], "paper_method": run.get("paper_method"), "points": []})
            used = run.get("train_compute_seconds")
            entry["points"].append((None if used is None else used / 60.0, 100.0 * run["ap_seg"]))
    return out


def first_rung_ahead(record: dict, key: str, rival: str) -> float | None:
    """The smallest budget (seconds) at which run ``key`` scores a higher APseg than ``rival`` (None: never).

    >>> r = lambda b, a, w: {"budget_seconds": b, "runs": {"ours": {"ap_seg": a}, "ws": {"ap_seg": w}}}
    >>> first_rung_ahead({"rungs": [r(60, 0.1, 0.3), r(120, 0.35, 0.3)]}, "ours", "ws")
    120
    """
    for rung in sorted(record["rungs"], key=lambda r: r["budget_seconds"]):
        runs = rung["runs"]
        if "ap_seg" in runs.get(key, {}) and "ap_seg" in runs.get(rival, {}) and runs[key]["ap_seg"] > runs[rival]["ap_seg"]:
            return rung["budget_seconds"]
    return None


def ap_vs_compute_figure(record: dict, paper: dict[str, float], out: str | Path, *,
                         title: str = "APseg against training compute, DSB2018 test (134 images)") -> Path:
    """Draw ``record``'s curves and ``paper``'s points (paper method -> APseg %) into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 (matplotlib.ticker below)

    lines = curves(record)
    colours = {key: plt.get_cmap("tab10")(i % 10) for i, key in enumerate(lines)}
    fig, (ax, far) = plt.subplots(1, 2, figsize=(9.5, 4.8), sharey=True, gridspec_kw={"width_ratios": [4, 1]})
    trained = [x for line in lines.values() for x, _ in line["points"] if x is not None]
    for key, line in lines.items():
        points = [(x, y) for x, y in line["points"] if x is not None]
        if points:
            ax.plot(*zip(*points), "o-", color=colours[key], label=line["label"])
        else:  # no budgeted training: the same model at every rung
            ax.axhline(line["points"][-1][1], color=colours[key], ls="--", label=f"{line['label']} (no training budget)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    if trained:
        ax.set_xlim(min(trained) / 1.3, max(trained) * 1.3)
    ax.set(xlabel="training compute used (CPU minutes, process time, log scale)", ylabel="APseg (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    shown = [(key, line) for key, line in lines.items() if line["paper_method"] in paper]
    for i, (key, line) in enumerate(shown):
        far.plot([i], [paper[line["paper_method"]]], "s", color=colours[key], ms=8)
    far.set_xticks(range(len(shown)), [line["label"] for _, line in shown], rotation=60, ha="right", fontsize=7)
    far.set(title="paper (GPU,\nfull schedule)", xlim=(-0.7, max(len(shown), 1) - 0.3))
    far.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def ap_vs_compute_report(record_path: str | Path, out_dir: str | Path, paper_table1: str | Path | None,
                         dataset: str = "dsb2018") -> Path:
    """The report's entry (spec key ``compute``): ``<out_dir>/ap_vs_compute.png`` from a compute record file."""
    try:
        record = json.loads(Path(record_path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{record_path}: cannot read the compute record ({exc}); "
                        "run benchmarks/cpu_dsb2018.py or drop 'compute' from the report spec") from None
    paper = read_paper_points(paper_table1, dataset) if paper_table1 else {}
    return ap_vs_compute_figure(record, paper, Path(out_dir) / "ap_vs_compute.png")


__all__ = ["ap_vs_compute_figure", "ap_vs_compute_report", "curves", "first_rung_ahead", "read_paper_points"]
