"""The canonical dataset format, validated on read.

A dataset folder holds ``images/<id>.png`` (uint8, gray or RGB) and ``labels/<id>.png`` (uint16 label
map: 0 = background, 1..n = instances), a ``manifest.json`` written last by the converter, and the
``split.json`` written by ``objguided split``. Image ids are file stems.

Every reader checks what it reads and raises :class:`~objguided.errors.DataError` naming the file and
the problem, so that a corrupt input never turns into a silent wrong number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from objguided.engine.atomic import atomic_path, write_json
from objguided.errors import DataError

IMAGE_DIR = "images"
LABEL_DIR = "labels"
MANIFEST = "manifest.json"
SPLIT = "split.json"
SUBSETS = ("train", "val", "test")
TIFF_SUFFIXES = (".tif", ".tiff")


def read_tiff_pixels(source, where: str, fix: str = "re-extract or re-download it") -> np.ndarray:
    """A TIFF's pixels (``source``: a path or a binary file object) through tifffile; any failure is a
    DataError naming ``where``. A compressed TIFF whose codec tifffile takes from imagecodecs (LZW: every
    Cell Tracking Challenge file; JPEG, zstd...) says to install that package, not that the file is bad."""
    import tifffile

    try:
        array = np.asarray(tifffile.imread(source))
    except Exception as exc:  # tifffile raises many types for damaged files
        if "imagecodecs" in str(exc):
            raise DataError(f"{where}: its compression needs the 'imagecodecs' package, which this Python "
                            f"lacks ({exc}); the file is fine: `pip install imagecodecs` (requirements.txt pins "
                            "it; `make env` installs it)") from exc
        raise DataError(f"{where}: cannot be read as a TIFF image ({exc}); {fix}") from exc
    if array.size == 0:  # tifffile answers some damaged files with an empty array and a warning
        raise DataError(f"{where}: cannot be read as a TIFF image (no image data); {fix}")
    return array


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return read_tiff_pixels(path, str(path), "re-export or re-download it")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":  # palette PNGs: keep the indices, do not expand to colours
                return np.asarray(im)
            if im.mode in ("RGBA", "LA"):
                im = im.convert("RGB" if im.mode == "RGBA" else "L")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({exc}); re-export or re-download it") from exc


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8, HxW (gray) or HxWx3 (RGB); an alpha channel is dropped.

    16-bit images are rescaled to uint8 by their own 0.1 and 99.9 percentiles, per channel (:func:`to_uint8`).
    """
    path = Path(path)
    return pixels_to_uint8(gray_or_rgb(_read_array(path), str(path)), str(path))


def gray_or_rgb(img: np.ndarray, where: str) -> np.ndarray:
    """HxW or HxWx3 pixels from a decoded image: alpha dropped, a single channel squeezed; any other shape
    (or an empty image) is a DataError naming ``where``.

    >>> gray_or_rgb(np.zeros((2, 3, 4)), "x").shape, gray_or_rgb(np.zeros((2, 3, 1)), "x").shape
    ((2, 3, 3), (2, 3))
    """
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or min(img.shape[:2]) == 0:
        raise DataError(f"{where}: image of shape {img.shape}; expected one 2-D frame, gray (HxW) or RGB (HxWx3)")
    return img


def pixels_to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    """Pixels of any real type -> uint8, the same for every source and method: uint8 kept, bool 0/255, any
    other type by :func:`to_uint8`; a non-real type or a float image with NaN or infinite pixels is a
    DataError naming ``where``.

    >>> pixels_to_uint8(np.array([[True, False]]), "x").tolist()
    [[255, 0]]
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{where}: pixel type {array.dtype} is not a real number type")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{where}: float image holds NaN or infinite pixels; expected finite intensities")
    return to_uint8(array)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Rescale any numeric image to uint8 by its 0.1 and 99.9 percentiles, each channel of an HxWxC image
    by its own (fluorescence channels have unrelated ranges); the same rule for every source and method.

    >>> to_uint8(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)).tolist()
    [[0, 64], [128, 255]]
    >>> to_uint8(np.array([[[0, 0]], [[10, 4000]]], dtype=np.uint16))[..., 1].ravel().tolist()
    [0, 255]
    """
    if img.ndim == 3:
        return np.stack([to_uint8(img[..., k]) for k in range(img.shape[2])], axis=-1)
    img = img.astype(np.float64)
    lo, hi = np.percentile(img, [0.1, 99.9])
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.clip(np.round((img - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def read_label_map(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a label map as int32 HxW (0 = background); ``shape`` is the image's (H, W) to check against."""
    path = Path(path)
    labels = _read_array(path)
    if labels.ndim != 2:
        raise DataError(f"{path}: label map of shape {labels.shape}; expected one channel of instance ids")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise DataError(f"{path}: label map of type {labels.dtype} holds non-integer values; "
                            "expected integer instance ids (uint16 PNG or TIFF)")
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: label map holds negative ids; expected 0 = background, 1..n = instances")
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise DataError(f"{path}: label map is {labels.shape[0]}x{labels.shape[1]} but its image is "
                        f"{shape[0]}x{shape[1]}; they must be the same size")
    return labels.astype(np.int32)


#: zlib level of written PNGs (PIL's default); converters of large sets may pass 1: about 3x faster to
#: encode, files about 20% larger
PNG_LEVEL = 6


def write_image(path: str | Path, img: np.ndarray, compress_level: int = PNG_LEVEL) -> None:
    if img.dtype != np.uint8:
        raise ValueError(f"write_image: expected uint8, got {img.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG", compress_level=compress_level)


def write_label_map(path: str | Path, labels: np.ndarray, compress_level: int = PNG_LEVEL) -> None:
    if labels.size and int(labels.max()) > np.iinfo(np.uint16).max:
        raise ValueError(f"{path}: more than 65535 instances do not fit a uint16 label map")
    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(np.uint16)).save(tmp, format="PNG", compress_level=compress_level)


@dataclass(frozen=True)
class Sample:
    id: str
    image: np.ndarray
    labels: np.ndarray


class CanonicalDataset:
    """A dataset folder in the canonical format.

    ``ids`` are restricted to one subset of ``split.json`` when ``subset`` is given.
    """

    def __init__(self, root: str | Path, subset: str | None = None, split_path: str | Path | None = None):
        self.root = Path(root)
        if not (self.root / IMAGE_DIR).is_dir():
            raise DataError(f"{self.root}: no '{IMAGE_DIR}/' folder; expected a canonical dataset "
                            f"(images/<id>.png, labels/<id>.png); run `objguided convert` first")
        all_ids = sorted(p.stem for p in (self.root / IMAGE_DIR).iterdir() if p.suffix.lower() == ".png")
        if subset is None:
            self.ids = all_ids
        else:
            split = read_split(split_path or self.root / SPLIT)
            if subset not in split:
                raise DataError(f"{split_path or self.root / SPLIT}: no subset '{subset}'")
            known = set(all_ids)
            missing = [i for i in split[subset] if i not in known]
            if missing:
                raise DataError(f"{split_path or self.root / SPLIT}: {len(missing)} ids of '{subset}' have no "
                                f"image in {self.root / IMAGE_DIR} (first: {missing[0]}); re-run convert")
            self.ids = list(split[subset])
        self.subset = subset

    def image_path(self, image_id: str) -> Path:
        return self.root / IMAGE_DIR / f"{image_id}.png"

    def label_path(self, image_id: str) -> Path:
        return self.root / LABEL_DIR / f"{image_id}.png"

    def image(self, image_id: str) -> np.ndarray:
        return read_image(self.image_path(image_id))

    def labels(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        return read_label_map(self.label_path(image_id), shape)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self.ids[index]
        image = self.image(image_id)
        return Sample(image_id, image, self.labels(image_id, image.shape[:2]))

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]


def write_sample(root: str | Path, image_id: str, image: np.ndarray, labels: np.ndarray,
                 compress_level: int = PNG_LEVEL) -> None:
    if image.shape[:2] != labels.shape:
        raise ValueError(f"{image_id}: image {image.shape[:2]} and labels {labels.shape} differ in size")
    root = Path(root)
    write_image(root / IMAGE_DIR / f"{image_id}.png", image, compress_level)
    write_label_map(root / LABEL_DIR / f"{image_id}.png", labels, compress_level)


def write_manifest(root: str | Path, info: dict) -> None:
    """Written last by a converter: its presence means the folder is complete."""
    write_json(Path(root) / MANIFEST, info)


def read_split(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found; run `objguided split` first")
    try:
        split = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    for subset in SUBSETS:
        if not isinstance(split.get(subset), list):
            raise DataError(f"{path}: '{subset}' must be a list of image ids")
    seen: dict[str, str] = {}
    for subset in SUBSETS:
        for image_id in split[subset]:
            if image_id in seen:
                raise DataError(f"{path}: image '{image_id}' is in both '{seen[image_id]}' and '{subset}'")
            seen[image_id] = subset
    return split
