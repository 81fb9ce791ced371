"""Rebuild the Cell Tracking Challenge miniatures tests/data/ctc/<NAME>.zip: the real archives' names, folder
structure and compression, with tiny synthetic frames (no real data is available here).

What a real training archive (http://data.celltrackingchallenge.net/training-datasets/<NAME>.zip) holds, and
so what these do: a deflate zip with directory entries and one top folder <NAME>/; per sequence 01, 02 the
frames <seq>/tNNN.tif, gold truth <seq>_GT/SEG/man_segNNN.tif for a few frames only (and in those frames
only SOME cells annotated), tracking markers <seq>_GT/TRA/man_trackNNN.tif for every frame (one small blob
per cell, ids = track ids, unrelated to the masks' ids) with man_track.txt ("L B E P" per track), and
silver truth <seq>_ST/SEG/man_segNNN.tif for every frame (every cell). Every TIFF is LZW-compressed;
frames are uint16 for fluorescence (Fluo-N2DL-HeLa) and uint8 for phase contrast (PhC-C2DL-PSC), masks
and markers uint16.

    .venv/bin/python tests/data/make_ctc_mini.py

Each set: 2 sequences x 4 frames of 48x64; gold truth on frames 1 and 3. HeLa: frame 1's gold mask holds
every cell, frame 3's leaves out two. PSC: both gold frames leave out one cell.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
OUT = HERE / "ctc"
SHAPE = (48, 64)
FRAMES = 4
#: set -> (frame dtype, {gold frame: cells left out of its gold mask})
SETS = {"Fluo-N2DL-HeLa": (np.uint16, {1: 0, 3: 2}), "PhC-C2DL-PSC": (np.uint8, {1: 1, 3: 1})}
FIXED_TIME = (2019, 3, 1, 0, 0, 0)  # zip entry times: the same bytes on every rebuild


def tif(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, compression="lzw")
    return buf.getvalue()


def cells(rng: np.random.Generator, t: int) -> list[tuple[int, int, int]]:
    """(row, col, radius) of the frame's cells: five cells drifting one pixel per frame."""
    base = [(10, 10, 5), (12, 40, 6), (30, 20, 5), (34, 50, 4), (24, 32, 3)]
    return [(r + t, c + t, rad) for r, c, rad in base]


def disc(shape, r, c, rad) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - r) ** 2 + (cols - c) ** 2 <= rad ** 2


def frame_files(name: str, seq: str, t: int, dtype, gold_left_out: int | None, rng) -> dict[str, bytes]:
    silver = np.zeros(SHAPE, np.uint16)
    markers = np.zeros(SHAPE, np.uint16)
    gold = np.zeros(SHAPE, np.uint16)
    for k, (r, c, rad) in enumerate(cells(rng, t)):
        silver[disc(SHAPE, r, c, rad)] = k + 1
        markers[disc(SHAPE, r, c, 1)] = 100 + k  # track ids: not the masks' ids
        if gold_left_out is not None and k >= gold_left_out:  # the first cells are the unannotated ones
            gold[disc(SHAPE, r, c, rad)] = 7 * (k + 1)
    top = 4000 if dtype == np.uint16 else 200
    frame = rng.integers(0, top // 8, SHAPE) + (silver > 0) * (top // 2)
    files = {f"{name}/{seq}/t{t:03d}.tif": tif(frame.astype(dtype)),
             f"{name}/{seq}_ST/SEG/man_seg{t:03d}.tif": tif(silver),
             f"{name}/{seq}_GT/TRA/man_track{t:03d}.tif": tif(markers)}
    if gold_left_out is not None:
        files[f"{name}/{seq}_GT/SEG/man_seg{t:03d}.tif"] = tif(gold)
    return files


def archive_files(name: str) -> dict[str, bytes]:
    dtype, gold = SETS[name]
    rng = np.random.default_rng(len(name))
    files: dict[str, bytes] = {}
    for seq in ("01", "02"):
        for t in range(FRAMES):
            files.update(frame_files(name, seq, t, dtype, gold.get(t), rng))
        files[f"{name}/{seq}_GT/TRA/man_track.txt"] = "".join(
            f"{100 + k} 0 {FRAMES - 1} 0\n" for k in range(5)).encode()
    return files


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    folders = sorted({"/".join(n.split("/")[:k]) + "/" for n in files for k in range(1, n.count("/") + 1)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in folders:
            zf.writestr(zipfile.ZipInfo(folder, FIXED_TIME), b"")
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, FIXED_TIME), files[name], compress_type=zipfile.ZIP_DEFLATED)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name in SETS:
        write_zip(OUT / f"{name}.zip", archive_files(name))


if __name__ == "__main__":
    main()
