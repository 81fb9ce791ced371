"""Source ``plant``: the Plant Phenotyping Datasets (Minervini et al.), from the user's own archive.

The data may not be redistributed: each user requests it from the providers through their form
(https://www.plant-phenotyping.org/datasets) and points ``options.archive`` at the
``Plant_Phenotyping_Datasets.zip`` they received, or at the folder it was extracted to.

Expected layout (any folder above ``Plant/`` and ``Tracking/`` is accepted)::

    Plant_Phenotyping_Datasets/Plant/Ara2012/ara2012_plant001_rgb.png        + ara2012_plant001_label.png
    Plant_Phenotyping_Datasets/Plant/Ara2013-Canon/ara2013_plant001_rgb.png  + ..._label.png
    Plant_Phenotyping_Datasets/Tracking/Ara2012/...plant01...frame01_rgb.png + ..._label.png
    Plant_Phenotyping_Datasets/Tracking/Ara2013-Canon/...plant01...frame01_rgb.png

``Plant/Ara2013-RPi``, ``Plant/Tobacco``, ``Tray/`` and ``Stacks/`` are not used by the paper and are
ignored (counted in the manifest). A tracking frame is recognised by ``options.tracking_pattern``, a
regular expression with groups ``plant`` and ``frame`` searched in the path below
``Tracking/<collection>/`` (the default accepts ``ara2012_plant01_frame01_rgb.png`` as well as
``plant01/frame01_rgb.png``), so another naming of the frames needs only a new pattern.

Image ids follow the authors' published split (``datasets/plant/split``): ``ara2012_plant001`` for the
"Plant" subset and ``ara2012_plant01_frame01`` for the "Tracking" subset. ``selection: paper`` takes the
paper's 473 images (:func:`paper_ids`) and fails, naming what is missing, if the archive lacks any of
them; ``selection: all`` takes every Ara2012 / Ara2013-Canon image of both subsets found.

Label PNGs: instance ids are the palette indices when the PNG is paletted (mode ``P``, index 0 =
background); an RGB label image maps each distinct colour but black to one id. The authors' code instead
reads the label PNG as BGR and keeps only colours whose three channels are not all equal, so a leaf whose
colour is a gray becomes background: the manifest reports how many leaves that rule would drop
(``code_rule``), per image.

This module also holds the machinery the other user-data sources (``lsc``, ``neural``, ``ctc``) share:
:class:`RawTree` (a zip archive or a folder, read the same way), the decoders, and
:class:`StagedOutput` (a conversion is written beside the output and moved into place only once every
input has been read and checked, so a failed conversion leaves an earlier good one untouched).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from objguided.data.canonical import IMAGE_DIR, LABEL_DIR, TIFF_SUFFIXES, to_uint8, write_sample
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

# ================================================================================================
# Shared machinery for user-supplied archives (used by plant, lsc, neural, ctc)
# ================================================================================================


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


def _open_pil(data: bytes, where: str) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{where}: cannot be read as an image ({exc}); re-extract or re-download it") from exc


def _read_tiff(data: bytes, where: str) -> np.ndarray:
    import tifffile

    try:
        array = np.asarray(tifffile.imread(io.BytesIO(data)))
    except Exception as exc:  # tifffile raises many types for damaged files
        raise DataError(f"{where}: cannot be read as a TIFF image ({exc}); re-extract or re-download it") from exc
    if array.size == 0:  # tifffile answers some damaged files with an empty array and a warning
        raise DataError(f"{where}: cannot be read as a TIFF image (no image data); re-extract or re-download it")
    return array


def decode_image(data: bytes, where: str, gray_if_equal: bool = False) -> np.ndarray:
    """An image file's bytes -> uint8 HxW or HxWx3 (alpha dropped; palette expanded; 16-bit rescaled by
    the 0.1/99.9 percentiles, as :func:`objguided.data.canonical.read_image` does).

    ``gray_if_equal``: an RGB image whose three channels are equal becomes HxW.
    """
    if PurePosixPath(where).suffix.lower() in TIFF_SUFFIXES:
        img = _read_tiff(data, where)
    else:
        im = _open_pil(data, where)
        if im.mode == "P" or im.mode == "PA":
            im = im.convert("RGB")
        elif im.mode == "RGBA":
            im = im.convert("RGB")
        elif im.mode == "LA":
            im = im.convert("L")
        elif im.mode == "CMYK" or im.mode == "YCbCr":
            im = im.convert("RGB")
        img = np.asarray(im)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or min(img.shape[:2]) == 0:
        raise DataError(f"{where}: image of shape {img.shape}; expected one 2-D frame, gray (HxW) or RGB (HxWx3)")
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        if not np.issubdtype(img.dtype, np.number):
            raise DataError(f"{where}: pixel type {img.dtype} is not numeric")
        img = to_uint8(img)
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


def _multi_piece(labels: np.ndarray) -> int:
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
        raw = _read_tiff(data, where)
        mode = "ids"
        palette = None
    else:
        im = _open_pil(data, where)
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
    return labels, LabelInfo(objects, mode, dropped, _multi_piece(labels) if objects else 0)


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

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.stage = self.out / f".staging-{uuid.uuid4().hex[:12]}"
        self.ids: list[str] = []
        self._seen: set[str] = set()

    def __enter__(self) -> "StagedOutput":
        self.out.mkdir(parents=True, exist_ok=True)
        for old in self.out.glob(".staging-*"):  # left by a killed conversion
            shutil.rmtree(old, ignore_errors=True)
        self.stage.mkdir()
        return self

    def add(self, image_id: str, image: np.ndarray, labels: np.ndarray) -> None:
        if image_id in self._seen:
            raise DataError(f"two inputs give the same image id '{image_id}'")
        self._seen.add(image_id)
        write_sample(self.stage, image_id, image, labels)
        self.ids.append(image_id)

    def commit(self) -> None:
        for sub in (IMAGE_DIR, LABEL_DIR):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
            for image_id in self.ids:
                os.replace(self.stage / sub / f"{image_id}.png", self.out / sub / f"{image_id}.png")
            keep = set(self.ids)
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


# ================================================================================================
# The plant source
# ================================================================================================

FORM_URL = "https://www.plant-phenotyping.org/datasets"
#: the paper's selection: (year, subset) -> count, and tracking: year -> (plants, frames per plant)
PAPER_PLANT = {"2012": 120, "2013": 165}
PAPER_TRACKING = {"2012": (4, 13), "2013": (8, 17)}
DEFAULT_TRACKING_PATTERN = r"(?i)plant_?(?P<plant>\d+)(?:[^/]*/)*[^/]*?frame_?(?P<frame>\d+)[^/]*?_rgb\.png$"
_COLLECTION = re.compile(r"(?i)ara(?P<year>2012|2013)(?:[-_]canon)?")
_PLANT_FILE = re.compile(r"(?i)ara(?P<year>\d{4})_plant(?P<num>\d+)_rgb\.png")


def paper_ids() -> list[str]:
    """The 473 image ids of Yi et al.: 120 + 165 "Plant" images and 4x13 + 8x17 "Tracking" frames.

    >>> ids = paper_ids(); len(ids), ids[0], ids[-1]
    (473, 'ara2012_plant001', 'ara2013_plant165')
    """
    ids = [f"ara{year}_plant{n:03d}" for year, count in PAPER_PLANT.items() for n in range(1, count + 1)]
    ids += [f"ara{year}_plant{p:02d}_frame{f:02d}" for year, (plants, frames) in PAPER_TRACKING.items()
            for p in range(1, plants + 1) for f in range(1, frames + 1)]
    return sorted(ids)


@dataclass
class PlantOptions:
    #: Plant_Phenotyping_Datasets.zip as received from the providers, or the folder it was extracted to
    archive: str = ""
    #: paper: the paper's 473 Arabidopsis images (all must be present); all: every Ara2012 / Ara2013-Canon
    #: image of the "Plant" and "Tracking" subsets found
    selection: str = "paper"
    #: regex with groups `plant` and `frame`, searched in the path below Tracking/<collection>/
    tracking_pattern: str = DEFAULT_TRACKING_PATTERN

    def __post_init__(self):
        if self.selection not in ("paper", "all"):
            raise ConfigError(f"options.selection: '{self.selection}' is not one of paper, all")
        try:
            pattern = re.compile(self.tracking_pattern)
        except re.error as exc:
            raise ConfigError(f"options.tracking_pattern: not a regular expression ({exc})") from exc
        if not {"plant", "frame"} <= set(pattern.groupindex):
            raise ConfigError("options.tracking_pattern: needs the named groups (?P<plant>...) and (?P<frame>...)")


_LAYOUT = ("Plant_Phenotyping_Datasets/Plant/Ara2012/ara2012_plant001_rgb.png + ara2012_plant001_label.png, "
           "Plant/Ara2013-Canon/ara2013_plantNNN_rgb.png, and Tracking/Ara2012/, Tracking/Ara2013-Canon/ holding "
           "the frames ..._plantPP_frameFF_rgb.png + _label.png")


def plant_unavailable(options: PlantOptions) -> str | None:
    path = require_path(options.archive, "archive")
    if path is not None and path.exists():
        return None
    where = f"options.archive is '{options.archive}', which does not exist" if path else "options.archive is not set"
    return (f"the Plant Phenotyping Datasets are not here ({where}). They may not be redistributed: request "
            f"Plant_Phenotyping_Datasets.zip from the providers through the form at {FORM_URL} and set "
            f"options.archive to the zip or the folder it was extracted to. Expected layout: {_LAYOUT}. "
            "See datasets/plant.yaml")


def _classify(name: str, tracking: re.Pattern) -> tuple[str, str] | None:
    """A file of the archive -> ("plant" | "tracking", image id), ("ignored", collection),
    ("unrecognised", name) or None (not an RGB image of the Plant or Tracking subsets)."""
    parts = name.split("/")
    if not parts[-1].lower().endswith("_rgb.png"):
        return None
    for i, part in enumerate(parts[:-2]):
        subset = part.lower()
        if subset not in ("plant", "tracking"):
            continue
        collection = parts[i + 1]
        m = _COLLECTION.fullmatch(collection)
        if not m:
            return ("ignored", f"{part}/{collection}")
        year = m.group("year")
        if subset == "plant":
            f = _PLANT_FILE.fullmatch(parts[-1])
            if len(parts) != i + 3 or not f or f.group("year") != year:
                return ("unrecognised", name)
            return ("plant", f"ara{year}_plant{int(f.group('num')):03d}")
        t = tracking.search("/".join(parts[i + 2:]))
        if not t:
            return ("unrecognised", name)
        return ("tracking", f"ara{year}_plant{int(t.group('plant')):02d}_frame{int(t.group('frame')):02d}")
    return None


def find_plant_images(tree: RawTree, tracking_pattern: str) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """(image id -> rgb member, ignored collections -> count, unrecognised names) of a plant archive."""
    pattern = re.compile(tracking_pattern)
    found: dict[str, str] = {}
    ignored: dict[str, int] = {}
    unrecognised: list[str] = []
    for name in tree.names:
        kind = _classify(name, pattern)
        if kind is None:
            continue
        if kind[0] == "ignored":
            ignored[kind[1]] = ignored.get(kind[1], 0) + 1
        elif kind[0] == "unrecognised":
            unrecognised.append(name)
        else:
            image_id = kind[1]
            if image_id in found:
                raise DataError(f"{tree.where(name)} and {tree.where(found[image_id])} both give the image id "
                                f"'{image_id}'; expected one file per image (remove the duplicate)")
            found[image_id] = name
    return found, ignored, unrecognised


def label_member(tree: RawTree, rgb: str, names: set[str]) -> str:
    """The ``_label.png`` beside an ``_rgb.png`` member; DataError naming both when it is absent."""
    name = rgb[: -len("_rgb.png")] + "_label.png"
    if name in names:
        return name
    raise DataError(f"{tree.where(rgb)}: no label image beside it; expected {tree.where(name)}")


def convert_plant(options: PlantOptions, raw_dir: Path | None, out: Path) -> dict:
    if not options.archive:
        raise DataError(plant_unavailable(options))
    with RawTree(options.archive, "the Plant Phenotyping Datasets archive (Plant_Phenotyping_Datasets.zip)") as tree:
        names = set(tree.names)
        found, ignored, unrecognised = find_plant_images(tree, options.tracking_pattern)
        if not found:
            hint = f" (unrecognised: {', '.join(unrecognised[:3])})" if unrecognised else ""
            raise DataError(f"{tree.path}: no Arabidopsis image of the Plant or Tracking subsets found{hint}; "
                            f"expected {_LAYOUT}")
        extra = 0
        if options.selection == "paper":
            wanted = paper_ids()
            missing = [i for i in wanted if i not in found]
            if missing:
                hint = (f"; files the converter did not recognise: {', '.join(unrecognised[:3])} (set "
                        "options.tracking_pattern if the tracking frames are named otherwise)") if unrecognised else ""
                raise DataError(f"{tree.path}: {len(missing)} of the paper's 473 images are missing (first: "
                                f"{', '.join(missing[:5])}); expected {_LAYOUT}{hint}. Use selection: all to "
                                "convert what is there")
            extra = len(found) - len(wanted)
            selected = wanted
        else:
            selected = sorted(found)
        pairs = {i: (found[i], label_member(tree, found[i], names)) for i in selected}  # all labels exist
        stats = LabelStats()
        counts = {"plant_ara2012": 0, "plant_ara2013": 0, "tracking_ara2012": 0, "tracking_ara2013": 0}
        with StagedOutput(out) as staged:
            for image_id in selected:
                rgb, lab = pairs[image_id]
                image = decode_image(tree.read(rgb), tree.where(rgb))
                labels, info = decode_labels(tree.read(lab), tree.where(lab))
                check_pair(image, labels, tree.where(rgb), tree.where(lab), "leaf")
                staged.add(image_id, image, labels)
                stats.add(image_id, info)
                subset = "tracking" if "_frame" in image_id else "plant"
                counts[f"{subset}_{image_id[:7]}"] += 1
            staged.commit()
        record = archive_record(options.archive)
    return {"source": "plant", "images": len(selected), "objects": stats.objects, "ids": list(selected),
            "selection": options.selection, "subsets": counts, **stats.manifest("leaves"),
            "skipped": {"not_in_selection": extra, "ignored_collections": ignored,
                        "unrecognised_files": len(unrecognised)},
            "archive": record}


register_source(Source("plant", PlantOptions, convert_plant, unavailable=plant_unavailable,
                       description="Plant Phenotyping Datasets (user's own archive): the paper's 473 Arabidopsis "
                                   "images, leaf instances from the label palette"))
