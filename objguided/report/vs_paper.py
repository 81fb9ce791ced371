"""Ours against the paper (``ours_vs_paper.{png,pdf}``): every Table I row that stands for a row of the paper's
Table I is a point at (paper's AP, our AP), with our bootstrap interval over test images as its vertical bar
(the seed std where there is no interval), on one panel per AP column with the line y = x. A reproduced
number lies on the line; the distance below it is what the reproduction misses.

Colour: the method (``paper_method``); marker: the paper's dataset.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from objguided.report.fig4 import save_figure
from objguided.report.runs import first_seen
from objguided.report.table1 import HEADER_OF

METRICS = ("ap_dec", "ap_seg", "ap_seg_50", "ap_seg_75")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def comparable_rows(table1: pd.DataFrame) -> pd.DataFrame:
    """The Table I rows with a paper value for at least one AP column."""
    if table1.empty:
        return table1
    has_paper = table1[[f"paper_{m}" for m in METRICS]].notna().any(axis=1)
    return table1[table1["in_paper"].astype(bool) & has_paper]


def _error_bar(row: pd.Series, metric: str) -> tuple[float, float]:
    """(below, above) of the vertical bar: the bootstrap interval, else the seed std, else none."""
    value, low, high = row[metric], row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if pd.notna(low) and pd.notna(high):
        return max(value - low, 0.0), max(high - value, 0.0)
    std = row.get(f"{metric}_std")
    return (std, std) if pd.notna(std) else (0.0, 0.0)


def make_vs_paper(table1: pd.DataFrame, note: str | None = None) -> Figure:
    rows = comparable_rows(table1)
    fig = Figure(figsize=(4.0 * len(METRICS), 4.9), layout="constrained")
    axes = fig.subplots(1, len(METRICS), squeeze=False)[0]
    methods = first_seen(rows["paper_method"]) if len(rows) else []
    datasets = first_seen(rows["paper_dataset"]) if len(rows) else []
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    colour = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    marker = {d: _MARKERS[i % len(_MARKERS)] for i, d in enumerate(datasets)}
    for ax, metric in zip(axes, METRICS):
        ax.plot([0, 100], [0, 100], color="0.5", linewidth=0.8, linestyle="--", zorder=1)
        for _, r in rows.iterrows():
            if pd.isna(r[f"paper_{metric}"]) or pd.isna(r[metric]):
                continue
            below, above = _error_bar(r, metric)
            ax.errorbar(r[f"paper_{metric}"], r[metric], yerr=np.array([[below], [above]]), fmt=marker[r["paper_dataset"]],
                        color=colour[r["paper_method"]], markersize=5, elinewidth=0.9, capsize=2, zorder=3)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_aspect("equal")
        ax.set_title(HEADER_OF[metric])
        ax.set_xlabel("paper (%)")
        ax.grid(True, alpha=0.3, linewidth=0.5)
        if rows.empty:
            ax.text(50, 50, "no run stands for a row\nof the paper's Table I", ha="center", va="center", fontsize=8)
    axes[0].set_ylabel("ours (%), bar: 95% bootstrap interval")
    handles = ([Line2D([], [], color=colour[m], marker="o", linestyle="", label=m) for m in methods]
               + [Line2D([], [], color="0.3", marker=marker[d], linestyle="", label=f"paper's {d}") for d in datasets])
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle("Ours against the paper's Table I (y = x: reproduced)" + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def plot_vs_paper(table1: pd.DataFrame, png_path: str | os.PathLike, pdf_path: str | os.PathLike,
                  note: str | None = None) -> None:
    save_figure(make_vs_paper(table1, note), png_path, pdf_path)
