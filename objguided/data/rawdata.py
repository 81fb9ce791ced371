"""Reading user-supplied raw archives the same way whether zipped or extracted, and writing a conversion safely.

Shared by the user-data sources (``plant``, ``lsc``, ``neural``, ``ctc``): :class:`RawTree` (a zip archive
or a folder, read the same way), the image and label decoders, and :class:`StagedOutput` (a conversion is
written beside the output and moved into place only once every input has been read and checked, so a
failed conversion leaves an earlier good one untouched).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from objguided.data.canonical import (
    IMAGE_DIR,
    LABEL_DIR,
    TIFF_SUFFIXES,
    gray_or_rgb,
    pixels_to_uint8,
    read_tiff_pixels,
    write_label_map,
    write_sample,
)
from objguided.errors import DataError


class RawTree:
    """The files of a zip archive or of a folder, by posix path relative to its root.

    ``what`` describes the expected data for error messages ("the Plant Phenotyping Datasets archive").
    Hidden files and macOS ``__MACOSX`` entries are skipped.
    """

    def __init__(self, path: str | Path, what: str):
        self.path = Path(os.path.expanduser(str(path)))
        self.what = what
        self._zip: zipfile.ZipFile | None = None
        if not self.path.exists():
            raise DataError(f"{self.path}: not found; expected {what} (a .zip file or the folder it was "
                            "extracted to)")
        if self.path.is_dir():
            names = []
            for root, dirs, files in os.walk(self.path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
                for f in files:
                    if not f.startswith("."):
                        names.append((Path(root) / f).relative_to(self.path).as_posix())
            self.names = sorted(names)
        else:
            try:
                self._zip = zipfile.ZipFile(self.path)
                infos = self._zip.infolist()
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise DataError(f"{self.path}: not a readable zip archive ({exc}); expected {what}. The file "
                                "may be truncated (an interrupted download): download it again") from exc
            names = []
            for info in infos:
                name = info.filename.replace("\\", "/")
                parts = PurePosixPath(name).parts
                if info.is_dir() or "__MACOSX" in parts or any(p.startswith(".") for p in parts):
                    continue
                names.append(name)
            self.names = sorted(names)
        if not self.names:
            raise DataError(f"{self.path}: holds no files; expected {what}")

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (self.path / name).read_bytes()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, ValueError) as exc:
            raise DataError(f"{self.where(name)}: cannot be read from {self.path.name} ({exc}); the archive "
                            "is damaged or truncated: download or extract it again") from exc

    def where(self, name: str) -> str:
        """How a member is named in messages: ``archive.zip:member`` or the file's path."""
        return f"{self.path}:{name}" if self._zip is not None else str(self.path / name)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> "RawTree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def archive_record(path: str | Path) -> dict:
    """Provenance of the user's raw data: path, and size + sha256 when it is one file."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        return {"path": str(path), "kind": "folder"}
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "kind": "file", "size": path.stat().st_size, "sha256": digest.hexdigest()}


def open_pil(data: bytes, where: str) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{where}: cannot be read as an image ({exc}); re-extract or re-download it") from exc


def read_tiff(data: bytes, where: str) -> np.ndarray:
    return read_tiff_pixels(io.BytesIO(data), where)


def read_pixels(data: bytes, where: str) -> np.ndarray:
    """An image file's pixels as stored (any type, any channel layout): TIFF through tifffile, other formats
    through PIL with palettes, alpha and other colour modes resolved to RGB or gray."""
    if PurePosixPath(where).suffix.lower() in TIFF_SUFFIXES:
        return read_tiff(data, where)
    im = open_pil(data, where)
    if im.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "RGBX", "RGBa"):
        im = im.convert("RGB")
    elif im.mode in ("LA", "La"):
        im = im.convert("L")
    return np.asarray(im)


def decode_image(data: bytes, where: str, gray_if_equal: bool = False) -> np.ndarray:
    """An image file's bytes -> uint8 HxW or HxWx3 (alpha dropped; palette expanded; 16-bit rescaled by
    the 0.1/99.9 percentiles per channel, as :func:`objguided.data.canonical.read_image` does).

    ``gray_if_equal``: an RGB image whose three channels are equal becomes HxW.
    """
    img = pixels_to_uint8(gray_or_rgb(read_pixels(data, where), where), where)
    if gray_if_equal and img.ndim == 3 and np.array_equal(img[..., 0], img[..., 1]) \
            and np.array_equal(img[..., 1], img[..., 2]):
        img = np.ascontiguousarray(img[..., 0])
    return img


@dataclass
class LabelInfo:
    """What decoding a label image found: objects, how they were encoded, and the authors' code's view."""

    objects: int
    encoding: str  # palette | rgb | ids
    #: objects the authors' code (colours with three equal channels = background) would not see
    code_rule_dropped: int
    #: objects made of more than one connected piece (8-connectivity)
    multi_piece: int


def _gray_colour(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])


def multi_piece(labels: np.ndarray) -> int:
    from skimage.measure import label as connected

    pieces = connected(labels, background=0, connectivity=2)
    pairs = np.unique(np.stack([labels[pieces > 0], pieces[pieces > 0]]), axis=1)
    ids, counts = np.unique(pairs[0], return_counts=True)
    return int((counts > 1).sum())


def decode_labels(data: bytes, where: str) -> tuple[np.ndarray, LabelInfo]:
    """A label image's bytes -> (int32 HxW instance ids, :class:`LabelInfo`).

    - paletted PNG (mode P): the palette index is the instance id, 0 = background;
    - RGB(A) image: each distinct colour other than black is one instance, ids 1..n in colour order;
    - gray / 16-bit / TIFF: the pixel values are the instance ids.
    """
    if PurePosixPath(where).suffix.lower() in TIFF_SUFFIXES:
        raw = read_tiff(data, where)
        mode = "ids"
        palette = None
    else:
        im = open_pil(data, where)
        if im.mode == "P":
            raw, mode = np.asarray(im), "palette"
            pal = im.getpalette() or []
            palette = np.zeros((256, 3), np.int64)
            pal_arr = np.asarray(pal[: 256 * 3], np.int64).reshape(-1, 3)
            palette[: len(pal_arr)] = pal_arr
        elif im.mode in ("RGB", "RGBA"):
            raw, mode, palette = np.asarray(im.convert("RGB")), "rgb", None
        elif im.mode in ("L", "I", "I;16", "I;16B", "I;16L", "1"):
            raw, mode, palette = np.asarray(im), "ids", None
        else:
            raise DataError(f"{where}: label image of PIL mode {im.mode}; expected a paletted PNG (one index per "
                            "object), an RGB colour-coded PNG (one colour per object) or a gray instance-id map")
    if mode == "rgb":
        if raw.ndim != 3 or raw.shape[2] != 3:
            raise DataError(f"{where}: colour label image of shape {raw.shape}; expected HxWx3")
        packed = (raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2]
        colours, inverse = np.unique(packed, return_inverse=True)
        inverse = inverse.reshape(packed.shape)
        if colours[0] == 0:  # black is background; the other colours get ids 1..n in colour order
            labels = inverse.astype(np.int32)
            fg = colours[1:]
        else:
            labels = (inverse + 1).astype(np.int32)
            labels[packed == 0] = 0
            fg = colours
        rgb = np.stack([(fg >> 16) & 255, (fg >> 8) & 255, fg & 255], axis=-1)
        dropped = int(_gray_colour(rgb).sum()) if len(fg) else 0
    else:
        if raw.ndim == 3 and raw.shape[2] in (3, 4) and mode == "ids":
            raise DataError(f"{where}: a TIFF label image with {raw.shape[2]} channels; expected one channel of "
                            "instance ids")
        if raw.ndim != 2:
            raise DataError(f"{where}: label image of shape {raw.shape}; expected one 2-D map of instance ids")
        if raw.dtype == bool:
            raw = raw.astype(np.uint8)
        if not np.issubdtype(raw.dtype, np.integer):
            if np.issubdtype(raw.dtype, np.floating) and np.all(np.mod(raw, 1) == 0) and raw.min() >= 0:
                raw = raw.astype(np.int64)
            else:
                raise DataError(f"{where}: label image of type {raw.dtype} holds non-integer or negative values; "
                                "expected integer instance ids")
        if raw.size and raw.min() < 0:
            raise DataError(f"{where}: label image holds negative ids; expected 0 = background, 1..n = objects")
        if raw.size and int(raw.max()) > np.iinfo(np.uint16).max:
            raise DataError(f"{where}: label ids above 65535 do not fit the canonical uint16 label map")
        labels = raw.astype(np.int32)
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if mode == "palette":
            dropped = int(_gray_colour(palette[ids]).sum()) if len(ids) else 0
        else:
            dropped = len(ids)  # read as BGR, a gray id map is gray everywhere: the code's rule sees nothing
    if min(labels.shape) == 0:
        raise DataError(f"{where}: empty label image (shape {labels.shape})")
    objects = int(len(np.unique(labels)) - (1 if (labels == 0).any() else 0))
    return labels, LabelInfo(objects, mode, dropped, multi_piece(labels) if objects else 0)


def check_pair(image: np.ndarray, labels: np.ndarray, image_where: str, label_where: str, thing: str) -> None:
    """The label map fits its image and holds at least one object; else DataError naming the file."""
    if labels.shape != image.shape[:2]:
        raise DataError(f"{label_where}: label image is {labels.shape[0]}x{labels.shape[1]} but its image "
                        f"{image_where} is {image.shape[0]}x{image.shape[1]}; expected the same size")
    if not labels.any():
        raise DataError(f"{label_where}: no {thing} in this label image (every pixel is background); expected "
                        f"at least one labelled {thing}: re-extract it, or remove the image and its label")


class StagedOutput:
    """Write a conversion beside ``out`` and move it into place only when every sample was written.

    Usage::

        with StagedOutput(out) as staged:
            for ...: staged.add(image_id, image, labels)
            staged.commit()

    An exception before :meth:`commit` removes the staging folder and leaves ``out`` as it was (an
    earlier conversion there stays intact). :meth:`commit` moves each file with an atomic rename, then
    removes images and labels of ``out`` that the new conversion does not have (stale ids of an earlier
    conversion with other options). The caller (``objguided.data.convert``) writes ``manifest.json`` last.
    """

    def __init__(self, out: str | Path, extra_dirs: tuple[str, ...] = ()):
        self.out = Path(out)
        self.stage = self.out / f".staging-{uuid.uuid4().hex[:12]}"
        self.ids: list[str] = []
        self._seen: set[str] = set()
        #: folders of per-image label maps beside labels/ (ctc: markers/), replaced as a whole like labels/
        self.extra: dict[str, list[str]] = {name: [] for name in extra_dirs}

    def __enter__(self) -> "StagedOutput":
        self.out.mkdir(parents=True, exist_ok=True)
        # left by a killed conversion; none is another's in use: objguided.data.convert.convert holds the
        # output folder's lock (and removes these, and dsb2018's .convert-*, before any source runs)
        for old in self.out.glob(".staging-*"):
            shutil.rmtree(old, ignore_errors=True)
        self.stage.mkdir()
        return self

    def add(self, image_id: str, image: np.ndarray, labels: np.ndarray) -> None:
        if image_id in self._seen:
            raise DataError(f"two inputs give the same image id '{image_id}'")
        self._seen.add(image_id)
        write_sample(self.stage, image_id, image, labels)
        self.ids.append(image_id)

    def add_map(self, folder: str, image_id: str, labels: np.ndarray) -> None:
        """An extra label map of an added image, ``<folder>/<image_id>.png`` (a folder named at construction)."""
        if image_id not in self._seen or folder not in self.extra:
            raise ValueError(f"add_map: {folder}/{image_id}: add the image first, and name {folder} in extra_dirs")
        write_label_map(self.stage / folder / f"{image_id}.png", labels)
        self.extra[folder].append(image_id)

    def commit(self) -> None:
        for sub, ids in ((IMAGE_DIR, self.ids), (LABEL_DIR, self.ids), *self.extra.items()):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
            for image_id in ids:
                os.replace(self.stage / sub / f"{image_id}.png", self.out / sub / f"{image_id}.png")
            keep = set(ids)
            for path in (self.out / sub).glob("*.png"):
                if path.stem not in keep and not path.name.startswith("."):
                    path.unlink()
        shutil.rmtree(self.stage, ignore_errors=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


class LabelStats:
    """Totals over a conversion's label images, for the manifest."""

    def __init__(self):
        self.objects = 0
        self.encodings: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.multi_piece: dict[str, int] = {}

    def add(self, image_id: str, info: LabelInfo) -> None:
        self.objects += info.objects
        self.encodings[info.encoding] = self.encodings.get(info.encoding, 0) + 1
        if info.code_rule_dropped:
            self.dropped[image_id] = info.code_rule_dropped
        if info.multi_piece:
            self.multi_piece[image_id] = info.multi_piece

    def manifest(self, thing: str) -> dict:
        return {
            "label_encoding": self.encodings,
            "code_rule": {
                "rule": "the authors' code reads the label PNG as BGR and treats every colour whose three "
                        "channels are equal as background; ids here come from the palette (or one id per "
                        "non-black colour), so no object is lost",
                f"dropped_{thing}": int(sum(self.dropped.values())),
                "images_affected": len(self.dropped),
                "per_image": dict(sorted(self.dropped.items())),
            },
            "multi_piece_objects": {
                "note": f"{thing} whose pixels form more than one connected piece (kept as one object)",
                "count": int(sum(self.multi_piece.values())),
                "per_image": dict(sorted(self.multi_piece.items())),
            },
        }


def require_path(value: str, option: str) -> Path | None:
    """``options.<option>`` as a path, or None when empty."""
    return Path(os.path.expanduser(value)) if value else None


def missing_archive(value: str, what: str, form_url: str, layout: str, card: str) -> str | None:
    """The `unavailable` message of a source whose archive the user must request, or None when it is there."""
    path = require_path(value, "archive")
    if path is not None and path.exists():
        return None
    where = f"options.archive is '{value}', which does not exist" if path else "options.archive is not set"
    return (f"{what} is not here ({where}). It may not be redistributed: request it from the providers "
            f"through the form at {form_url} and set options.archive to the archive or the folder it was "
            f"extracted to. Expected layout: {layout}. See {card}")

