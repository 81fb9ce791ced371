"""Figure 5: APseg (percent) against the IoU threshold, one panel per dataset, one line per method.

Seeds of the same (dataset, label) are averaged; with more than one seed a min-max band is drawn.
Uses matplotlib's object API (``Figure`` on the Agg canvas), so no pyplot state is touched.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter

from objguided.engine.atomic import atomic_path
from objguided.errors import DataError
from objguided.report.runs import as_float, check_metrics, first_seen

#: Threshold grid the paper's Figure 5 uses (IoU 0.50:0.05:0.95).
PAPER_THRESHOLDS = np.linspace(0.5, 0.95, 10)

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _curves(runs: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """Datasets, labels (first-seen order) and, per (dataset, label), the thresholds and a seeds x thresholds array."""
    if not runs:
        raise DataError("Figure 5: no runs to plot")
    curves: dict[tuple[str, str], tuple[np.ndarray, list[np.ndarray]]] = {}
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or "metrics" not in run or "dataset" not in run or "label" not in run:
            raise DataError(f"run record #{i}: a run record needs dataset, label and metrics")
        where = f"metrics of run {run['dataset']}/{run.get('method')}/{run.get('variant')}/seed{run.get('seed')}"
        check_metrics(run["metrics"], where)
        thresholds = np.array([as_float(t) for t in run["metrics"]["thresholds"]], dtype=float)
        ap = 100.0 * np.array([as_float(v) for v in run["metrics"]["ap_seg"]], dtype=float)
        key = (run["dataset"], run["label"])
        if key in curves:
            first = curves[key][0]
            if first.shape != thresholds.shape or not np.allclose(first, thresholds, atol=1e-6):
                raise DataError(f"{where}: IoU thresholds differ from another seed of {key[0]}/{key[1]}")
            curves[key][1].append(ap)
        else:
            curves[key] = (thresholds, [ap])
    datasets = first_seen(r["dataset"] for r in runs)
    labels = first_seen(r["label"] for r in runs)
    return datasets, labels, {k: (t, np.vstack(aps)) for k, (t, aps) in curves.items()}


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _legend_columns(names: list[str], width: float) -> int:
    """Most legend columns whose rough width (inches, "small" font, filled column by column) fits ``width``."""
    for ncol in range(len(names), 1, -1):
        rows = math.ceil(len(names) / ncol)
        columns = [names[i:i + rows] for i in range(0, len(names), rows)]
        if sum(0.6 + 0.062 * max(map(len, col)) for col in columns) <= 0.95 * width:
            return len(columns)
    return 1


def make_fig5(runs: list[dict], title: str | None = None) -> Figure:
    """Build (without saving) the Figure 5 ``Figure`` for ``runs``."""
    datasets, labels, curves = _curves(runs)
    colors = dict(zip(labels, _colors(len(labels))))
    markers = {label: _MARKERS[i % len(_MARKERS)] for i, label in enumerate(labels)}

    n = len(datasets)
    banded = any(aps.shape[0] > 1 for _, aps in curves.values())
    band_name = "min-max over seeds (line: mean)"
    names = labels + ([band_name] if banded else [])
    width = max(6.4, 4.2 * n)
    ncol = _legend_columns(names, width)
    n_legend_rows = math.ceil(len(names) / ncol)
    height = 4.0 + 0.25 * n_legend_rows + (0.35 if title else 0.0)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]

    handles: dict[str, Any] = {}
    for ax, dataset in zip(axes, datasets):
        for label in labels:
            if (dataset, label) not in curves:
                continue
            thresholds, aps = curves[(dataset, label)]
            with np.errstate(all="ignore"):
                mean = np.nanmean(aps, axis=0) if aps.shape[0] > 1 else aps[0]
            (line,) = ax.plot(thresholds, mean, color=colors[label], marker=markers[label], markersize=4,
                              linewidth=1.6, clip_on=False, zorder=3, label=label)
            if aps.shape[0] > 1:
                with np.errstate(all="ignore"):
                    ax.fill_between(thresholds, np.nanmin(aps, axis=0), np.nanmax(aps, axis=0),
                                    color=colors[label], alpha=0.2, linewidth=0)
            handles.setdefault(label, line)
        ax.set_title(dataset)
        ax.set_xlabel("IoU threshold")
        ax.set_xlim(0.48, 0.97)
        ax.set_xticks(PAPER_THRESHOLDS[::2])
        ax.set_xticks(PAPER_THRESHOLDS[1::2], minor=True)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.2f"))
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3, linewidth=0.6)
    axes[0].set_ylabel("APseg (%)")
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)

    entries = [handles[label] for label in labels]
    entry_names = list(labels)
    if banded:
        entries.append(Patch(facecolor="0.5", alpha=0.3, linewidth=0))
        entry_names.append(band_name)
    fig.legend(
        entries, entry_names,
        loc="outside lower center", ncol=ncol, frameon=False, fontsize="small",
    )
    if title:
        fig.suptitle(title)
    return fig


def plot_fig5(
    runs: list[dict], png_path: str | os.PathLike, pdf_path: str | os.PathLike, title: str | None = None
) -> None:
    """APseg (%) against IoU threshold, one panel per dataset, one line per label; PNG and PDF, written atomically."""
    fig = make_fig5(runs, title)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
    with atomic_path(pdf_path) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})
