"""Error analysis (``errors_<dataset>.png``): per method, its worst test images by APseg, with what went wrong
drawn in three colours.

One row per method label (its lowest seed), ``n_worst`` panels: the images with the lowest per-image APseg
(``analysis.image_aps``, from metrics.json's per-image match data), worst first. On each, the predictions at
the method's operating point (``analysis.operating_point``, as Figure 4 draws them): true positives (a match at
mask IoU > 0.5, as scored) in green, false positives in red, and the ground-truth objects no drawn true positive
matched (missed) in blue. A run scored before the match data was stored gets a panel that says so.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from objguided.errors import DataError
from objguided.report import analysis
from objguided.report.bootstrap import matches_of, unpack_bits
from objguided.report.fig4 import (
    PANEL_INCHES,
    edge_width_for,
    label_masks,
    paint,
    read_panels,
    save_figure,
    shrink,
    to_rgb,
)
from objguided.report.runs import first_seen

DEFAULT_WORST = 3
COLOURS = {"TP": (0.1, 0.75, 0.2), "FP": (0.95, 0.15, 0.1), "missed": (0.2, 0.55, 1.0)}


def classify(panel, tp_bits: list[int], threshold: float, gt: list[np.ndarray]):
    """(true positive masks, false positive masks, missed GT masks) of one image at ``threshold``.

    ``tp_bits``: the image's ``pred_tp_seg`` (file order, as ``panel``); bit 0 is the match at IoU 0.5.
    """
    tp_flags = unpack_bits(tp_bits, 1)[0] if tp_bits else np.zeros(0, bool)
    drawn = [j for j, s in enumerate(panel.scores) if s >= threshold]
    tps = [panel.masks[j] for j in drawn if tp_flags[j]]
    fps = [panel.masks[j] for j in drawn if not tp_flags[j]]
    missed = [g for g in gt if not any(_iou(g, t) > 0.5 for t in tps)]
    return tps, fps, missed


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def draw_errors(image: np.ndarray, tps, fps, missed) -> np.ndarray:
    out = to_rgb(image).copy()
    width = edge_width_for(image.shape)
    for name, masks in (("missed", missed), ("FP", fps), ("TP", tps)):
        for m in masks:
            paint(out, m, COLOURS[name], width, fill_alpha=0.25)
    return shrink(out)


def worst_images(run: dict, n_worst: int):
    """(matches, [(index, image id, APseg)] of the ``n_worst`` lowest-AP images) or (None, []) without match data."""
    matches = matches_of(run["metrics"])
    if matches is None:
        return None, []
    aps = analysis.image_aps(matches)
    order = np.argsort(aps, kind="stable")[:n_worst]
    return matches, [(int(k), matches.image_ids[k], float(aps[k])) for k in order]


def make_errors_figure(dataset: str, runs: list[dict], dataset_reader, n_worst: int = DEFAULT_WORST) -> Figure:
    """``runs``: run records of one dataset with ``dir`` and ``metrics``; ``dataset_reader(image_id)`` gives
    (image, GT label map)."""
    labels = first_seen(r["label"] for r in runs)
    if not labels:
        raise DataError(f"error analysis of {dataset}: no runs")
    fig = Figure(figsize=(PANEL_INCHES * n_worst + 1.6, PANEL_INCHES * len(labels) + 1.0), layout="constrained")
    axes = fig.subplots(len(labels), n_worst, squeeze=False)
    for row, label in zip(axes, labels):
        run = min((r for r in runs if r["label"] == label), key=lambda r: int(r["seed"]))
        matches, worst = worst_images(run, n_worst)
        row[0].set_ylabel("\n".join(textwrap.wrap(label, 18)), fontsize=7)
        if matches is None:
            row[0].text(0.5, 0.5, "no per-image match data\n(re-run the score step)", ha="center", va="center",
                        fontsize=7, transform=row[0].transAxes)
        point = analysis.operating_point(matches) if matches is not None else None
        panels = read_panels(Path(run["dir"]) / "predictions.json", [i for _, i, _ in worst]) if worst else {}
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(worst):  # fewer test images than panels
                ax.set_frame_on(False)
                continue
            k, image_id, ap = worst[j]
            image, labels_map = dataset_reader(image_id)
            tps, fps, missed = classify(panels[image_id], run["metrics"]["per_image"][k]["pred_tp_seg"],
                                        point.threshold, label_masks(labels_map))
            ax.imshow(draw_errors(image, tps, fps, missed), interpolation="nearest")
            ax.set_title(f"{textwrap.shorten(image_id, 22)}: APseg {100 * ap:.1f}%\n"
                         f"TP {len(tps)} · FP {len(fps)} · missed {len(missed)}", fontsize=6.5)
    handles = [Patch(color=COLOURS[k], label=t) for k, t in
               (("TP", "true positive (IoU > 0.5)"), ("FP", "false positive"), ("missed", "missed object"))]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle("\n".join(textwrap.wrap(f"{dataset}: each method's {n_worst} worst test images by APseg, "
                                         "predictions at its operating point (lowest seed)",
                                         max(20, int(fig.get_figwidth() * 12)))), fontsize=9)
    return fig


def plot_errors(dataset: str, data: dict, runs: list[dict], png_path: str | os.PathLike,
                n_worst: int = DEFAULT_WORST) -> None:
    """``data``: {"dir", "split", "subset"} of the dataset (as for Figure 4)."""
    from objguided.data.canonical import CanonicalDataset

    ds = CanonicalDataset(data["dir"], data.get("subset", "test"), data.get("split"))

    def reader(image_id: str):
        image = ds.image(image_id)
        return image, ds.labels(image_id, image.shape[:2])

    save_figure(make_errors_figure(dataset, runs, reader, n_worst), png_path, None)
