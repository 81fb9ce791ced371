"""Loss curves: every run's ``losses.csv`` (written by the shared trainer, objguided.engine.trainer), one figure
per dataset (``loss_curves_<dataset>.png``), one panel per method label, its seeds overlaid.

The curve is the ``total`` column (the minimised loss) against the optimizer step, on a log scale. A method
that trains outside the shared trainer (watershed tunes, Cellpose and StarDist run their own loops) has no
``losses.csv``: its panel says so instead of staying blank.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from objguided.errors import DataError
from objguided.report.fig4 import save_figure
from objguided.report.runs import first_seen

LOSS_LOG = "losses.csv"  # objguided.engine.trainer.LOSS_LOG, without importing torch
PANEL = (3.0, 2.2)
COLUMNS = 4


def read_losses(path: str | os.PathLike) -> pd.DataFrame | None:
    """``losses.csv`` as a frame with ``step`` and ``total``; None when the run has none. Raises DataError
    naming the file when it is there but unreadable or lacks those columns."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the loss log: {exc}") from None
    missing = [c for c in ("step", "total") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: loss log without column(s) {', '.join(missing)}; re-run the train step")
    return df


def make_loss_figure(dataset: str, runs: list[dict]) -> Figure:
    """``runs``: run records of one dataset with ``dir``; one panel per label, one line per seed."""
    labels = first_seen(r["label"] for r in runs)
    if not labels:
        raise DataError(f"loss curves of {dataset}: no runs")
    n_cols = min(COLUMNS, len(labels))
    n_rows = math.ceil(len(labels) / n_cols)
    fig = Figure(figsize=(PANEL[0] * n_cols, PANEL[1] * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, label in zip(axes, labels):
        ax.set_title(label, fontsize=8)
        lowest = math.inf
        for run in sorted((r for r in runs if r["label"] == label), key=lambda r: int(r["seed"])):
            df = read_losses(Path(run["dir"]) / LOSS_LOG)
            if df is None or df.empty:
                continue
            ax.plot(df["step"], df["total"], marker=".", markersize=3, linewidth=1, label=f"seed {run['seed']}")
            lowest = min(lowest, float(df["total"].min()))
        if lowest < math.inf:
            if lowest > 0:  # losses span decades; a loss that can go negative keeps a linear axis
                ax.set_yscale("log")
            ax.set_xlabel("step", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, frameon=False)
            ax.grid(True, alpha=0.3, linewidth=0.5)
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no losses.csv\n(trains outside the shared trainer)", ha="center", va="center",
                    fontsize=7, color="0.4", transform=ax.transAxes)
    for ax in axes[len(labels):]:
        ax.set_axis_off()
    fig.suptitle(f"{dataset}: training loss (total) per step, seeds overlaid", fontsize=10)
    return fig


def plot_loss_curves(dataset: str, runs: list[dict], png_path: str | os.PathLike) -> None:
    save_figure(make_loss_figure(dataset, runs), png_path, None)
