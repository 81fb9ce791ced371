"""Figure 4: qualitative results, the same test images for every method beside the ground truth.

One figure per dataset: one row per image, the first column the ground truth, then one column per
method label (in the report's order). Choices, fixed so that every report shows the same panels:

- Images: the first ``n_images`` ids (default 3) of the evaluated subset in split order.
- Run: of a label with several seeds, the lowest seed's predictions.
- Instances: every prediction of the image with a score at or above the method's operating point (the
  threshold that maximises F1 at IoU 0.5 over the evaluated images, ``objguided.report.analysis``; printed
  under the method's name) -- a fixed threshold hides the detections of a method whose scores sit lower,
  such as a briefly trained detector's; the count shown and the total are printed in the panel -- drawn in
  ascending score so the most confident lie on top: a translucent fill and an opaque contour, one colour
  per instance (the colours carry no identity between panels).

Uses matplotlib's object API (``Figure`` on the Agg canvas), so no pyplot state is touched.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy import ndimage

from objguided.engine.atomic import atomic_path
from objguided.errors import DataError

DEFAULT_IMAGES = 3
DEFAULT_SCORE_THRESHOLD = 0.5
PANEL_INCHES = 1.9
FILL_ALPHA = 0.4
#: Overlays larger than this (pixels, longer side) are shrunk before plotting: twice a panel's pixels at
#: 150 dpi keeps the PNG sharp while the PDF stays small with the paper's 1000 px images.
MAX_PIXELS = 2 * round(PANEL_INCHES * 150)


class Panel(NamedTuple):
    """One method's instances on one image: boolean masks with their scores, and how many it predicted."""

    masks: list[np.ndarray]
    scores: list[float]
    total: int


def _palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours in [0, 1], cycling through tab20 (skipping its pale greys)."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    picks = [i for i in range(20) if i not in (14, 15)]
    return np.array([cmap(picks[i % len(picks)])[:3] for i in range(n)], dtype=float)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 gray or RGB -> float RGB in [0, 1].

    >>> to_rgb(np.array([[0, 255]], np.uint8)).tolist()
    [[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]
    """
    img = np.asarray(image, dtype=float) / 255.0
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def overlay(image: np.ndarray, masks: Sequence[np.ndarray], edge_width: int = 1) -> np.ndarray:
    """The image with each mask (in order, later on top) as a translucent fill and an opaque contour
    ``edge_width`` pixels wide."""
    out = to_rgb(image).copy()
    for mask, color in zip(masks, _palette(len(masks))):
        paint(out, mask, color, edge_width)
    return out


def paint(out: np.ndarray, mask: np.ndarray, color, edge_width: int = 1, fill_alpha: float = FILL_ALPHA) -> None:
    """Draw ``mask`` on the float RGB picture ``out`` in place: a translucent fill and an opaque contour."""
    mask = np.asarray(mask, bool)
    if mask.shape != out.shape[:2]:
        raise DataError(f"Figure 4: a mask of size {mask.shape} on an image of size {out.shape[:2]}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    # work inside the mask's box (plus the erosion's reach): a small object on a large image is cheap
    r0, r1 = max(rows[0] - edge_width, 0), rows[-1] + edge_width + 1
    c0, c1 = max(cols[0] - edge_width, 0), cols[-1] + edge_width + 1
    m, view = mask[r0:r1, c0:c1], out[r0:r1, c0:c1]
    view[m] = (1 - fill_alpha) * view[m] + fill_alpha * np.asarray(color, float)
    view[m & ~ndimage.binary_erosion(m, iterations=edge_width)] = color


def edge_width_for(shape: tuple[int, ...]) -> int:
    """Contour width (pixels) that stays visible once the image is shrunk to ``MAX_PIXELS``.

    >>> edge_width_for((128, 128)), edge_width_for((1000, 1200))
    (1, 2)
    """
    return max(1, round(max(shape[:2]) / MAX_PIXELS))


def shrink(picture: np.ndarray) -> np.ndarray:
    """An RGB float picture resized (Lanczos) so that its longer side is at most ``MAX_PIXELS``."""
    h, w = picture.shape[:2]
    if max(h, w) <= MAX_PIXELS:
        return picture
    from PIL import Image

    scale = MAX_PIXELS / max(h, w)
    im = Image.fromarray(np.clip(np.round(picture * 255), 0, 255).astype(np.uint8))
    return np.asarray(im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)) / 255.0


def label_masks(labels: np.ndarray) -> list[np.ndarray]:
    """One boolean mask per instance id of a label map (ascending id).

    >>> [m.astype(int).tolist() for m in label_masks(np.array([[0, 2], [1, 2]]))]
    [[[0, 0], [1, 0]], [[0, 1], [0, 1]]]
    """
    return [labels == i for i in np.unique(labels) if i != 0]


def short_id(image_id: str, width: int = 18) -> str:
    """An image id as at most two lines of ``width`` characters (the middle elided), so that long ids do not
    run into the next row's label.

    >>> short_id("nuclei_0001"), short_id("a" * 20 + "_" + "b" * 30)
    ('nuclei_0001', 'aaaaaaaaaaaaaaaaaa\\naa_bbbbb…bbbbbbbbb')
    """
    if len(image_id) > 2 * width:
        image_id = image_id[: width + width // 2 - 1] + "…" + image_id[-(width // 2):]
    return "\n".join(image_id[i:i + width] for i in range(0, len(image_id), width))


def _threshold_text(threshold: float) -> str:
    return "nothing to draw" if not np.isfinite(threshold) else f"score ≥ {threshold:.2g}"


def make_fig4(dataset: str, images: list[tuple[str, np.ndarray, np.ndarray]], columns: list[tuple],
              score_threshold: float = DEFAULT_SCORE_THRESHOLD, title: str | None = None) -> Figure:
    """``images``: (image id, image, GT label map); ``columns``: (label, {image id: Panel}) per method, or
    (label, {image id: Panel}, threshold) to draw that method at its own operating point instead of
    ``score_threshold``. A method with no panel for an image (no prediction there) shows the bare image.
    """
    if not images:
        raise DataError(f"Figure 4 of {dataset}: no test images")
    columns = [(c[0], c[1], c[2] if len(c) > 2 else score_threshold) for c in columns]
    n_rows, n_cols = len(images), 1 + len(columns)
    width = PANEL_INCHES * n_cols + 0.4
    title = title or (f"{dataset}: the first {n_rows} test images; each method's predictions at its operating "
                      "point (lowest seed)")
    title_lines = textwrap.wrap(title, max(20, int(width * 12)))  # ~12 characters per inch at 10 pt
    height = PANEL_INCHES * n_rows + 0.75 + 0.18 * (len(title_lines) - 1)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    wrap = max(12, int(PANEL_INCHES * 11))
    for i, (image_id, image, labels) in enumerate(images):
        gt = label_masks(labels)
        width_px = edge_width_for(image.shape)
        cells = [("Ground truth", shrink(overlay(image, gt, width_px)), f"{len(gt)} objects")]
        for label, panels, threshold in columns:
            panel = panels.get(image_id, Panel([], [], 0))
            keep = [j for j in np.argsort(panel.scores, kind="stable") if panel.scores[j] >= threshold]
            shown = shrink(overlay(image, [panel.masks[j] for j in keep], width_px))
            cells.append((f"{label}\n({_threshold_text(threshold)})", shown, f"{len(keep)} of {panel.total} shown"))
        for j, (name, picture, caption) in enumerate(cells):
            ax = axes[i, j]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.02, 0.02, caption, transform=ax.transAxes, fontsize=6.5, color="white",
                    bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "linewidth": 0})
            if i == 0:
                head, _, tail = name.partition("\n")
                ax.set_title("\n".join(textwrap.wrap(head, wrap) + ([tail] if tail else [])), fontsize=8)
            if j == 0:
                ax.set_ylabel(short_id(image_id), fontsize=7)
    fig.suptitle("\n".join(title_lines), fontsize=10)
    return fig


def save_figure(fig: Figure, png_path: str | os.PathLike, pdf_path: str | os.PathLike | None) -> None:
    """PNG (150 dpi) and PDF, atomically, without time stamps."""
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
    if pdf_path is not None:
        with atomic_path(pdf_path) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})


def read_panels(predictions_path: str | os.PathLike, image_ids: Sequence[str]) -> dict[str, Panel]:
    """The predictions of ``image_ids`` from a COCO results JSON (RLE masks decoded), file order kept."""
    from objguided.metrics.coco import decode_mask, read_predictions

    wanted = set(image_ids)
    panels: dict[str, Panel] = {i: Panel([], [], 0) for i in image_ids}
    for k, rec in enumerate(read_predictions(predictions_path)):
        if rec["image_id"] in wanted:
            p = panels[rec["image_id"]]
            p.masks.append(decode_mask(rec["segmentation"], f"{predictions_path}: record {k}"))
            p.scores.append(float(rec["score"]))
    return {i: Panel(p.masks, p.scores, len(p.masks)) for i, p in panels.items()}


def fig4_images(data_dir: str | os.PathLike, split_path: str | os.PathLike | None, subset: str,
                n_images: int = DEFAULT_IMAGES) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``n_images`` ids of ``subset`` (split order) with their image and GT label map."""
    from objguided.data.canonical import CanonicalDataset

    ds = CanonicalDataset(data_dir, subset, split_path)
    out = []
    for image_id in ds.ids[:n_images]:
        image = ds.image(image_id)
        out.append((image_id, image, ds.labels(image_id, image.shape[:2])))
    return out


def plot_fig4(dataset: str, data: dict, runs: list[dict], png_path: str | os.PathLike,
              pdf_path: str | os.PathLike | None = None, n_images: int = DEFAULT_IMAGES,
              score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> None:
    """Figure 4 of one dataset. ``data``: {"dir", "split" (or None), "subset"}; ``runs``: run records of
    this dataset with ``dir`` (their predictions.json is read), labels in first-seen order, lowest seed. Each
    method is drawn at its operating point (``analysis.operating_point``, from its metrics' match data);
    a run scored before that data was stored falls back to ``score_threshold``."""
    images = fig4_images(data["dir"], data.get("split"), data.get("subset", "test"), n_images)
    ids = [i for i, _, _ in images]
    columns = []
    for label in dict.fromkeys(r["label"] for r in runs):
        run = min((r for r in runs if r["label"] == label), key=lambda r: int(r["seed"]))
        columns.append((label, read_panels(Path(run["dir"]) / "predictions.json", ids),
                        drawing_threshold(run, score_threshold)))
    fig = make_fig4(dataset, images, columns, score_threshold)
    save_figure(fig, png_path, pdf_path)


def drawing_threshold(run: dict, fallback: float) -> float:
    """The run's operating-point score threshold, or ``fallback`` without match data in its metrics."""
    from objguided.report.analysis import operating_point
    from objguided.report.bootstrap import matches_of

    matches = matches_of(run["metrics"]) if run.get("metrics") else None
    return fallback if matches is None else operating_point(matches).threshold
