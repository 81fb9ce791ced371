"""Rebuild tests/data/lsc/CVPPP2017_LSC_training.zip: a miniature of the CVPPP 2017 Leaf Segmentation
Challenge training archive with its real names and folders, tiny synthetic plants (the real data may not be
redistributed and is not here).

Layout as in the real archive (datasets/lsc.yaml, layout_evidence): a deflate zip with directory entries,
CVPPP2017_LSC_training/training/A<k>/plantNNN_rgb.png (8-bit RGB), plantNNN_label.png (paletted PNG, the
palette index is the leaf id, 0 = background), plantNNN_fg.png (binary foreground), plantNNN_centers.png
(leaf centres) and A<k>.csv (leaf count per image). Far fewer images than the real 128 / 31 / 27 / 624, so
converting it must warn about every subset.

    .venv/bin/python tests/data/make_lsc_mini.py
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "lsc" / "CVPPP2017_LSC_training.zip"
ROOT = "CVPPP2017_LSC_training/training"
#: subset -> plant numbers (the real A1 numbers skip, e.g. plant001, plant002, plant004 ...)
PLANTS = {"A1": (1, 2, 4), "A2": (1, 3), "A3": (1, 2), "A4": (1, 2, 3)}
SHAPE = (24, 32)
FIXED_TIME = (2017, 3, 1, 0, 0, 0)


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def plant(rng: np.random.Generator, leaves: int) -> tuple[np.ndarray, np.ndarray]:
    """(label map of ``leaves`` elliptic leaves around the centre, their centres as a 0/255 map)."""
    rows, cols = np.ogrid[: SHAPE[0], : SHAPE[1]]
    labels = np.zeros(SHAPE, np.uint8)
    centres = np.zeros(SHAPE, np.uint8)
    for k in range(leaves):
        angle = 2 * np.pi * k / leaves + rng.uniform(0, 0.3)
        r, c = SHAPE[0] / 2 + 6 * np.sin(angle), SHAPE[1] / 2 + 8 * np.cos(angle)
        labels[((rows - r) / 3.5) ** 2 + ((cols - c) / 5) ** 2 <= 1] = k + 1
        centres[int(round(r)), int(round(c))] = 255
    return labels, centres


def subset_files(subset: str, rng: np.random.Generator) -> dict[str, bytes]:
    files, counts = {}, []
    palette = [0, 0, 0] + [int(v) for v in rng.integers(40, 255, 3 * 20)]
    for n in PLANTS[subset]:
        leaves = 3 + n % 3
        labels, centres = plant(rng, leaves)
        rgb = np.stack([rng.integers(60, 90, SHAPE)] * 3, -1).astype(np.uint8)  # soil
        rgb[labels > 0] = (40, 150, 40)
        label_im = Image.fromarray(labels, "P")
        label_im.putpalette(palette + [0] * (768 - len(palette)))
        stem = f"{ROOT}/{subset}/plant{n:03d}"
        files[f"{stem}_rgb.png"] = png(Image.fromarray(rgb))
        files[f"{stem}_label.png"] = png(label_im)
        files[f"{stem}_fg.png"] = png(Image.fromarray(((labels > 0) * 255).astype(np.uint8)))
        files[f"{stem}_centers.png"] = png(Image.fromarray(centres))
        counts.append(f"plant{n:03d}_rgb.png,{leaves}\n")
    files[f"{ROOT}/{subset}/{subset}.csv"] = "".join(counts).encode()
    return files


def main() -> None:
    rng = np.random.default_rng(2017)
    files = {name: data for subset in PLANTS for name, data in subset_files(subset, rng).items()}
    folders = sorted({"/".join(n.split("/")[:k]) + "/" for n in files for k in range(1, n.count("/") + 1)})
    OUT.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(OUT, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in folders:
            zf.writestr(zipfile.ZipInfo(folder, FIXED_TIME), b"")
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, FIXED_TIME), files[name], compress_type=zipfile.ZIP_DEFLATED)


if __name__ == "__main__":
    main()
