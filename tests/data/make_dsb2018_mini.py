"""Rebuild tests/data/dsb2018_mini.zip: three real 256x256 DSB2018 stage1_train images with all their masks.

The members are copied byte for byte, in the official layout (directory entries included), from the
mirror of stage1_train.zip (default ../shared/data/dsb2018/stage1_train.zip):

    .venv/bin/python tests/data/make_dsb2018_mini.py [--zip PATH]
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: three small 256x256 images with few nuclei, one from each subset of the paper's split
IDS = (
    "c6de542205b891eed5c40e6d8ae3d03a6ca39b26dc445b4dbc64340d4d64dd2d",  # train, 5 nuclei
    "16c3d5935ba94b720becc24b7a05741c26149e221e3401924080f41e2f891368",  # val, 11 nuclei
    "a1f50f101bc471e2d6967ebdb8ba81150588609e769f3b960f0801e4da5fdc6f",  # test, 7 nuclei
)


def build(source: Path, out: Path, ids: tuple[str, ...]) -> None:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename.split("/")[0] in ids:
                dst.writestr(info, src.read(info), compress_type=info.compress_type)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=HERE.parents[2] / "shared/data/dsb2018/stage1_train.zip")
    args = parser.parse_args()
    build(args.zip, HERE / "dsb2018_mini.zip", IDS)


if __name__ == "__main__":
    main()
