"""Source ``neural``: the paper's neural-cell images (rat CNS stem cells, time-lapse), a user-supplied folder.

The data is not public: whoever has it points ``options.folder`` at a folder laid out as::

    <folder>/images/<name>.png            the image (gray, or RGB whose channels are equal -> gray;
                                          .png, .tif, .tiff, .jpg, .bmp accepted; 16-bit rescaled)
    <folder>/masks/<name><suffix>.png     its colour-coded mask: every colour but black is one cell

``options.image_dirs`` (default ``[images]``) and ``options.mask_dir`` (default ``masks``) rename the two
folders, ``options.mask_suffix`` (default empty) is what the mask name adds to the image's stem (e.g.
``_mask``). The authors' own layout (``train/``, ``val/``, ``test/`` images and one ``mask/`` folder) is
``image_dirs: [train, val, test]`` and ``mask_dir: mask``. A mask may also be a paletted PNG (palette index
= cell) or a gray / 16-bit instance-id map. Every image must have a mask of its size with at least one
cell; masks without an image are counted and ignored.

A colour is one cell (as in the authors' code). If masks reuse a colour for several cells, set
``split_pieces: true`` to make each connected piece of a colour its own cell; the manifest always
reports how many cells are in more than one piece, and how many the authors' gray-colour rule would drop.

The paper has no published split: the ``seeded`` split kind (fractions 0.6/0.2/0.2, i.e. 386/129/129 of
the 644 images) is the protocol. When the folder is absent the dataset is left out of the run with a
warning and the other datasets still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from objguided.data.rawdata import (
    LabelInfo,
    LabelStats,
    StagedOutput,
    check_pair,
    decode_image,
    decode_labels,
    require_path,
)
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


@dataclass
class NeuralOptions:
    #: the folder holding the image and mask folders
    folder: str = ""
    #: image folders below `folder` (all are read; an image name must be unique across them)
    image_dirs: list = field(default_factory=lambda: ["images"])
    #: mask folder below `folder`
    mask_dir: str = "masks"
    #: mask file = <mask_dir>/<image stem><mask_suffix>.png
    mask_suffix: str = ""
    #: make every connected piece of a mask colour its own cell (for masks that reuse colours)
    split_pieces: bool = False

    def __post_init__(self):
        if not self.image_dirs or not all(isinstance(d, str) and d for d in self.image_dirs):
            raise ConfigError(f"options.image_dirs: {self.image_dirs} must be a non-empty list of folder names")


def _layout(options: NeuralOptions) -> str:
    dirs = ", ".join(f"{d}/<name>.png" for d in options.image_dirs)
    return f"{dirs} (the images) and {options.mask_dir}/<name>{options.mask_suffix}.png (colour-coded masks, " \
           "one colour per cell, black = background)"


def neural_unavailable(options: NeuralOptions) -> str | None:
    folder = require_path(options.folder, "folder")
    if folder is not None and folder.is_dir() and all((folder / d).is_dir() for d in options.image_dirs) \
            and (folder / options.mask_dir).is_dir():
        return None
    if folder is None:
        where = "options.folder is not set"
    elif not folder.is_dir():
        where = f"options.folder '{options.folder}' is not a folder"
    else:
        absent = [d for d in [*options.image_dirs, options.mask_dir] if not (folder / d).is_dir()]
        where = f"'{options.folder}' has no {', '.join(absent)} folder"
    return (f"the neural-cell data is not here ({where}). It is not public: if you have it, set options.folder to "
            f"a folder holding {_layout(options)}. The other datasets run without it. See datasets/neural.yaml")


def _split_pieces(labels: np.ndarray) -> np.ndarray:
    from skimage.measure import label as connected

    # pieces of equal value are labelled separately: two cells of one colour become two ids
    return connected(labels, background=0, connectivity=2).astype(np.int32)


def convert_neural(options: NeuralOptions, raw_dir: Path | None, out: Path) -> dict:
    why = neural_unavailable(options)
    if why:
        raise DataError(why)
    folder = require_path(options.folder, "folder")
    images: dict[str, Path] = {}
    for sub in options.image_dirs:
        for path in sorted((folder / sub).iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{path}: not an image file ({path.suffix or 'no suffix'}); expected only images "
                                f"({', '.join(IMAGE_SUFFIXES)}) in {folder / sub}")
            if path.stem in images:
                raise DataError(f"{path} and {images[path.stem]} have the same name; expected image names unique "
                                "across options.image_dirs")
            images[path.stem] = path
    if not images:
        raise DataError(f"{folder}: no image in {', '.join(options.image_dirs)}; expected {_layout(options)}")
    mask_folder = folder / options.mask_dir
    masks = {stem: mask_folder / f"{stem}{options.mask_suffix}.png" for stem in images}
    for stem, mask in masks.items():  # every mask exists before anything is decoded
        if not mask.is_file():
            raise DataError(f"{images[stem]}: no mask; expected {mask} (options.mask_dir '{options.mask_dir}', "
                            f"options.mask_suffix '{options.mask_suffix}')")
    used = {m.name for m in masks.values()}
    orphans = sum(1 for p in mask_folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name not in used)
    stats = LabelStats()
    with StagedOutput(out) as staged:
        for stem in sorted(images):
            image = decode_image(images[stem].read_bytes(), str(images[stem]), gray_if_equal=True)
            labels, info = decode_labels(masks[stem].read_bytes(), str(masks[stem]))
            check_pair(image, labels, str(images[stem]), str(masks[stem]), "cell")
            if options.split_pieces:
                labels = _split_pieces(labels)
                info = LabelInfo(int(labels.max()), info.encoding, info.code_rule_dropped, 0)
            staged.add(stem, image, labels)
            stats.add(stem, info)
        staged.commit()
    ids = sorted(images)
    return {"source": "neural", "images": len(ids), "objects": stats.objects, "ids": ids,
            "split_pieces": options.split_pieces, **stats.manifest("cells"),
            "skipped": {"masks_without_image": orphans}, "folder": str(folder)}


register_source(Source("neural", NeuralOptions, convert_neural, unavailable=neural_unavailable,
                       description="the paper's neural-cell images (not public): a user-supplied folder of images "
                                   "and colour-coded masks"))
