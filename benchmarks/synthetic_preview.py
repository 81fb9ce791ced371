"""Preview of the embedded synthetic datasets: 3 kinds x 3 samples, each as image and label overlay.

Usage: python benchmarks/synthetic_preview.py [--out benchmarks/results/synthetic_preview.png]
       [--size 256] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.color import label2rgb  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from objguided.data.synthetic import GENERATORS, generate  # noqa: E402

HERE = Path(__file__).resolve().parent


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    gray = image if image.ndim == 2 else image.mean(axis=2)
    out = label2rgb(labels, image=gray / 255.0, alpha=0.35, bg_label=0, bg_color=None, kind="overlay")
    out[find_boundaries(labels, mode="inner")] = (1.0, 1.0, 0.0)
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "synthetic_preview.png")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=3)
    args = ap.parse_args(argv)
    kinds = list(GENERATORS)
    fig, axes = plt.subplots(len(kinds), 2 * args.samples, figsize=(4 * args.samples * 2 / 1.6, 4 * len(kinds) / 1.6),
                             squeeze=False)
    for row, kind in enumerate(kinds):
        for k, (image_id, image, labels) in enumerate(generate(kind, args.samples, args.size, args.seed)):
            ax_i, ax_l = axes[row, 2 * k], axes[row, 2 * k + 1]
            ax_i.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255,
                        interpolation="nearest")
            ax_i.set_title(f"{image_id}", fontsize=9)
            ax_l.imshow(overlay(image, labels), interpolation="nearest")
            ax_l.set_title(f"{int(labels.max())} instances", fontsize=9)
            for ax in (ax_i, ax_l):
                ax.set_axis_off()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    plt.close(fig)
    return args.out


if __name__ == "__main__":
    print(main())
