"""Source ``folder``: a user's own images and instance masks, in one of three common layouts.

Anyone with their own annotated images can run every method on them without writing a converter: point
``options.path`` at the folder and name its ``options.layout``:

``canonical``
    ``<path>/images/<name>.<ext>`` and ``<path>/labels/<name>.<ext>``: the image and its label map (0 =
    background, 1..n = objects; uint8, uint16 or int PNG/TIFF; a paletted PNG's indices or an RGB PNG's
    colours are read as in the other sources). The output of ``objguided convert`` is such a folder, so
    converting one round-trips images and label maps exactly. Images and labels may differ in extension.
``cellpose``
    One flat folder in Cellpose's training naming: ``<name>.tif`` with ``<name>_masks.tif`` (also .tiff and
    .png; images also .jpg/.jpeg/.bmp). Cellpose's ``--img_filter _img`` naming, ``<name>_img.tif`` with
    ``<name>_masks.tif``, is accepted too; ``options.mask_filter`` is Cellpose's ``--mask_filter`` (the
    mask's ending, default ``_masks``). Cellpose's own outputs lying beside the data (``_cp_masks``,
    ``_flows``, ``_cp_output``, ``_outlines``, ``_seg.npy``: predictions, not ground truth), other files and
    subfolders (e.g. Cellpose's ``models/``) are ignored and counted in the manifest.
``coco``
    A COCO instances JSON (``options.annotations``, default ``annotations.json`` in ``path``) whose
    ``images[].file_name`` are relative to ``options.images`` (default: ``path`` itself). Segmentations may
    be polygons or RLE (compressed or not), decoded with pycocotools. Instances are painted in the JSON's
    annotation order, so where two overlap **the later annotation wins** (overlapping pixels and
    annotations hidden completely are counted in the manifest). Crowd annotations (``iscrowd: 1``) mark a
    group, not one object: they are left out (background) and counted; every category is an object. An
    image with no (non-crowd) annotation is left out and counted; an annotation for an image id the JSON
    does not list, or a ``file_name`` that does not exist, stops the conversion.

Image ids are the image files' names without their extension (COCO: of ``file_name``), so published split
lists of file names (``split: {kind: files}``) name them directly.

**Channels.** A TIFF is read with tifffile, anything else with Pillow (alpha dropped, palettes expanded).
Size-1 axes are dropped; a 2-D array is gray. A 3-D array is channel-last when its last axis has at most
:data:`MAX_CHANNELS` entries (HxWxC, as PNG and RGB TIFF store it), else channel-first when its first axis
has (CxHxW, as microscopy TIFFs often store channels); anything else, and any TIFF whose axes say z-stack
or time series, is refused: the harness segments one 2-D frame per file. ``options.channels`` (0-based)
picks which channels to keep, in order; by default the first three (a gray image stays gray, RGBA loses
its alpha). One channel is written gray, three RGB, and **two are padded to RGB with a zero third (blue)
channel**: the canonical format stores gray or RGB, and a zero channel adds no signal.

**Normalisation** (the same for every method, done once here: the canonical images are uint8, so readers
never rescale them again): uint8 pixels are kept as they are; any other type (uint16, int, float) is
mapped **per channel** linearly from that channel's 0.1 and 99.9 percentiles to 0..255 and clipped
(:func:`objguided.data.canonical.to_uint8`: the rule every source and
:func:`~objguided.data.canonical.read_image` apply, each channel on its own because the channels of a
fluorescence image have unrelated ranges); a constant channel becomes 0, a bool image 0/255, and a float
image with NaN or infinite pixels is refused.

Every image needs its mask of the same size with at least one object; an image without a mask, a mask
without an image, a mask of another size, an unreadable file, an empty folder, ... stop the conversion with
a :class:`~objguided.errors.DataError` naming the file and the expected layout. When ``path`` does not exist
the dataset is reported unavailable, and the DAG leaves it out with a warning.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from objguided.data.canonical import TIFF_SUFFIXES, pixels_to_uint8
from objguided.data.rawdata import (
    LabelInfo,
    LabelStats,
    StagedOutput,
    check_pair,
    decode_labels,
    multi_piece,
    read_pixels,
    require_path,
)
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: label maps must be lossless
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
#: the most channels an axis may hold to be read as the channel axis (more: a stack, refused)
MAX_CHANNELS = 8
#: endings of Cellpose's own outputs (predictions, flows, GUI files), never ground truth
CELLPOSE_OUTPUTS = ("_cp_masks", "_flows", "_cp_output", "_outlines")
CARD = "datasets/folder.yaml"
LAYOUTS = ("canonical", "cellpose", "coco")
NORMALISATION = ("uint8 pixels kept as they are; any other type (uint16, int, float) mapped per channel "
                 "linearly from the channel's 0.1 and 99.9 percentiles to 0..255, clipped (a constant channel "
                 "becomes 0); bool images 0/255")
CHANNEL_RULE = (f"HxW gray; HxWxC when C <= {MAX_CHANNELS}, else CxHxW when C <= {MAX_CHANNELS}; keep "
                "options.channels (default the first three); 1 kept channel -> gray, 3 -> RGB, 2 -> RGB with "
                "a zero third channel")


def layout_text(options: "FolderOptions") -> str:
    """The expected layout, as every message about a bad folder states it."""
    if options.layout == "canonical":
        return ("<path>/images/<name>.<ext> (the images: .png, .tif, .jpg, ...) and <path>/labels/<name>.png or "
                ".tif (their instance-id maps: 0 = background, 1..n = objects)")
    if options.layout == "cellpose":
        return (f"one flat folder of <name>.tif (or <name>_img.tif; also .png, ...) with <name>{options.mask_filter}"
                f".tif or .png beside it (Cellpose's naming; the mask is an instance-id map)")
    return (f"<path>/{options.annotations} (a COCO instances JSON: images[].file_name relative to "
            f"{'<path>/' + options.images if options.images else '<path>'}, annotations[].segmentation as "
            "polygons or RLE)")


@dataclass
class FolderOptions:
    #: the folder holding the user's data (absolute, or relative to the directory the run starts in)
    path: str = ""
    #: canonical | cellpose | coco
    layout: str = "canonical"
    #: 0-based channels to keep, in order (1 to 3 of them); empty: the first three (gray stays gray)
    channels: list = field(default_factory=list)
    #: cellpose: what a mask's name adds to its image's name (Cellpose's --mask_filter)
    mask_filter: str = "_masks"
    #: coco: the instances JSON, relative to path (or absolute)
    annotations: str = "annotations.json"
    #: coco: the folder file_name is relative to, below path (or absolute); empty: path itself
    images: str = ""

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ConfigError(f"options.layout: '{self.layout}' is not a known folder layout; expected one of "
                              f"{', '.join(LAYOUTS)} (see {CARD})")
        if not isinstance(self.channels, list) or len(self.channels) > 3 or \
                any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in self.channels):
            raise ConfigError(f"options.channels: {self.channels!r} must be a list of at most three 0-based channel "
                              "indices (empty: the first three)")
        if not self.mask_filter:
            raise ConfigError("options.mask_filter: must not be empty (Cellpose's default is _masks)")
        if not self.annotations:
            raise ConfigError("options.annotations: must name the COCO JSON (default annotations.json)")


def folder_unavailable(options: FolderOptions) -> str | None:
    path = require_path(options.path, "path")
    if path is not None and path.exists():
        return None
    where = f"options.path '{options.path}' does not exist" if path is not None else "options.path is not set"
    return (f"your image folder is not here ({where}). Set options.path to a folder in layout "
            f"'{options.layout}': {layout_text(options)}. See {CARD}")


# ---------------------------------------------------------------------------------------------- images


def _tiff_stack_axes(data: bytes) -> str:
    """The z / time axes (size > 1) a TIFF's metadata declares, e.g. 'Z'; '' when none or unknown."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            return "".join(a for a, n in zip(series.axes, series.shape) if a in "ZT" and n > 1)
    except Exception:  # unreadable metadata: the pixel read reports the damage
        return ""


def read_frame(data: bytes, where: str) -> np.ndarray:
    """An image file's pixels as stored (:func:`objguided.data.rawdata.read_pixels`); a TIFF z-stack or time
    series is refused, naming its axes."""
    array = read_pixels(data, where)
    if PurePosixPath(where).suffix.lower() in TIFF_SUFFIXES:
        stack = _tiff_stack_axes(data)
        if stack:
            kind = "z-stack" if "Z" in stack else "time series"
            raise DataError(f"{where}: a {kind} (TIFF axes {stack} of shape {array.shape}); expected one 2-D frame "
                            "per file, gray or with a few channels: save each frame as its own image")
    return array


def arrange_channels(array: np.ndarray, where: str, channels: list) -> tuple[np.ndarray, int]:
    """Pixels -> (HxW or HxWxK, K = 1..3 kept channels still of the stored type; the input's channel count)."""
    arr = np.asarray(array)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        if arr.shape[2] > MAX_CHANNELS:
            if arr.shape[0] > MAX_CHANNELS:
                raise DataError(f"{where}: image of shape {arr.shape}: neither its first nor its last axis has at "
                                f"most {MAX_CHANNELS} entries to be channels (a stack?); expected one 2-D frame, "
                                "HxW, HxWxC or CxHxW")
            arr = np.moveaxis(arr, 0, -1)
    elif arr.ndim != 2:
        raise DataError(f"{where}: image of shape {arr.shape}; expected one 2-D frame, HxW, HxWxC or CxHxW")
    if min(arr.shape[:2]) == 0:
        raise DataError(f"{where}: empty image (shape {arr.shape})")
    stack = arr[..., None] if arr.ndim == 2 else arr
    n = stack.shape[2]
    if channels:
        absent = [c for c in channels if c >= n]
        if absent:
            raise DataError(f"{where}: has {n} channel{'s' if n > 1 else ''} but options.channels {channels} asks "
                            f"for channel {absent[0]} (0-based)")
        stack = stack[..., channels]
    else:
        stack = stack[..., :3]
    return (stack[..., 0] if stack.shape[2] == 1 else stack), n


def canonical_image(data: bytes, where: str, channels: list) -> tuple[np.ndarray, dict]:
    """An image file's bytes -> the canonical uint8 HxW or HxWx3, and what was done (for the manifest)."""
    raw = read_frame(data, where)
    kept, n_in = arrange_channels(raw, where, channels)
    image = pixels_to_uint8(kept, where)  # NORMALISATION, per channel
    padded = image.ndim == 3 and image.shape[2] == 2
    if padded:
        image = np.concatenate([image, np.zeros(image.shape[:2] + (1,), np.uint8)], axis=-1)
    return np.ascontiguousarray(image), {"dtype": str(raw.dtype), "rescaled": kept.dtype != np.uint8,
                                         "padded": padded, "input_shape": list(raw.shape), "channels_in": n_in}


# ---------------------------------------------------------------------------------------------- pairing


def _visible_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]


def _by_stem(files: list[Path], suffixes: tuple, options: FolderOptions) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DataError(f"{path} and {found[path.stem]} have the same name; expected one file per name "
                            f"(layout {options.layout}: {layout_text(options)})")
        found[path.stem] = path
    return found


def _first_and_count(paths: list, what: str) -> str:
    more = f" (and {len(paths) - 1} more {what})" if len(paths) > 1 else ""
    return f"{paths[0]}{more}"


def _pairs_canonical(root: Path, options: FolderOptions) -> tuple[dict[str, tuple[Path, Path]], dict]:
    expected = f"layout canonical: {layout_text(options)}"
    images_dir, labels_dir = root / "images", root / "labels"
    absent = [d.name for d in (images_dir, labels_dir) if not d.is_dir()]
    if absent:
        raise DataError(f"{root}: no {' and no '.join(f'{a}/' for a in absent)} folder; expected {expected}")
    image_files, label_files = _visible_files(images_dir), _visible_files(labels_dir)
    images = _by_stem(image_files, IMAGE_SUFFIXES, options)
    labels = _by_stem(label_files, LABEL_SUFFIXES, options)
    if not images and not labels:
        raise DataError(f"{root}: no image and no label map found (an empty folder?); expected {expected}")
    lonely = [images[s] for s in sorted(images) if s not in labels]
    if lonely:
        raise DataError(f"{_first_and_count(lonely, 'images without a label map')}: image without a label map; "
                        f"expected {labels_dir / lonely[0].stem}.png or .tif ({expected})")
    orphans = [labels[s] for s in sorted(labels) if s not in images]
    if orphans:
        raise DataError(f"{_first_and_count(orphans, 'label maps without an image')}: label map (mask) without an "
                        f"image; expected {images_dir / orphans[0].stem}.png (or .tif, .jpg, ...) ({expected})")
    ignored = [p.name for p in image_files if p.suffix.lower() not in IMAGE_SUFFIXES] + \
              [p.name for p in label_files if p.suffix.lower() not in LABEL_SUFFIXES]
    return {s: (images[s], labels[s]) for s in sorted(images)}, {"ignored_files": ignored}


def _pairs_cellpose(root: Path, options: FolderOptions) -> tuple[dict[str, tuple[Path, Path]], dict]:
    expected = f"layout cellpose: {layout_text(options)}"
    files = _visible_files(root)
    outputs, other, mask_files, image_files = [], [], [], []
    for path in files:
        stem = path.stem
        if any(stem.endswith(tag) for tag in CELLPOSE_OUTPUTS) or path.name.endswith("_seg.npy"):
            outputs.append(path.name)
        elif stem.endswith(options.mask_filter):
            if path.suffix.lower() not in LABEL_SUFFIXES:
                raise DataError(f"{path}: a mask must be lossless, .png or .tif, not {path.suffix or 'no suffix'} "
                                f"({expected})")
            mask_files.append(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            image_files.append(path)
        else:
            other.append(path.name)
    if not mask_files and not image_files:
        raise DataError(f"{root}: no image and no mask found (an empty folder?); expected {expected}")
    masks: dict[str, Path] = {}
    for path in mask_files:
        base = path.stem[: -len(options.mask_filter)]
        if base in masks:
            raise DataError(f"{path} and {masks[base]} are both masks of '{base}'; expected one mask per image "
                            f"({expected})")
        masks[base] = path
    images = _by_stem(image_files, IMAGE_SUFFIXES, options)
    pairs: dict[str, tuple[Path, Path]] = {}
    owner: dict[str, Path] = {}
    lonely = []
    for stem in sorted(images):
        bases = [stem] + ([stem[: -len("_img")]] if stem.endswith("_img") else [])
        base = next((b for b in bases if b in masks), None)
        if base is None:
            lonely.append(images[stem])
            continue
        if base in owner:
            raise DataError(f"{images[stem]} and {owner[base]} both take the mask {masks[base]}; expected one image "
                            f"per mask ({expected})")
        owner[base] = images[stem]
        pairs[stem] = (images[stem], masks[base])
    if lonely:
        first = lonely[0]
        stem = first.stem[: -len("_img")] if first.stem.endswith("_img") else first.stem
        raise DataError(f"{_first_and_count(lonely, 'images without a mask')}: image without a mask; expected "
                        f"{root / stem}{options.mask_filter}.tif or .png beside it ({expected})")
    orphans = [masks[b] for b in sorted(masks) if b not in owner]
    if orphans:
        base = orphans[0].stem[: -len(options.mask_filter)]
        raise DataError(f"{_first_and_count(orphans, 'masks without an image')}: mask without an image; expected "
                        f"{root / base}.tif (or {base}_img.tif; .png, ...) beside it ({expected})")
    subfolders = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return pairs, {"cellpose_outputs": outputs, "ignored_files": other, "ignored_subfolders": subfolders}


# ---------------------------------------------------------------------------------------------- coco


def _coco_path(root: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else root / path


def _load_coco(path: Path, expected: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: COCO annotations not found; expected {expected}")
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as JSON ({exc}); expected {expected}") from exc
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) \
            or not isinstance(coco.get("annotations"), list):
        raise DataError(f"{path}: not a COCO instances file (expected an object with 'images' and 'annotations' "
                        f"lists); expected {expected}")
    return coco


def _annotation_mask(ann: dict, h: int, w: int, where: str) -> np.ndarray:
    """One annotation's segmentation (polygons, RLE or compressed RLE) -> bool HxW.

    pycocotools turns polygons and uncompressed RLE into compressed RLE; every compressed RLE is then decoded
    by :func:`objguided.metrics.coco.decode_mask`, which checks it (pycocotools' decoder does not).
    """
    from pycocotools import mask as mask_utils

    from objguided.metrics.coco import decode_mask

    seg = ann.get("segmentation")
    if isinstance(seg, list):
        polygons = []
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 \
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
                raise DataError(f"{where}: a polygon must be a list of at least three x, y pairs of numbers; got "
                                f"{str(poly)[:80]}")
            polygons.append([float(v) for v in poly])
        if not polygons:
            return np.zeros((h, w), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if not isinstance(seg["size"], list) or seg["size"] != [h, w]:
            raise DataError(f"{where}: RLE of size {seg['size']} on an image of {h}x{w}; expected size [{h}, {w}]")
        counts = seg["counts"]
        if isinstance(counts, list):
            if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts) or sum(counts) != h * w:
                raise DataError(f"{where}: uncompressed RLE counts must be non-negative integers summing to {h * w} "
                                f"(its size {h}x{w})")
            rle = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(counts, str):
            rle = seg
        else:
            raise DataError(f"{where}: RLE counts must be a list (uncompressed) or a string (compressed)")
    else:
        raise DataError(f"{where}: segmentation must be a list of polygons or an RLE object with 'size' and "
                        "'counts'")
    return decode_mask(rle, where)


def _coco_entries(root: Path, options: FolderOptions) -> tuple[Path, dict[str, tuple[dict, Path, list]], dict]:
    """The JSON's images that have annotations, by image id (file name stem), after checking every reference."""
    expected = f"layout coco: {layout_text(options)}"
    ann_path = _coco_path(root, options.annotations)
    images_root = _coco_path(root, options.images) if options.images else root
    coco = _load_coco(ann_path, expected)
    by_id: dict = {}
    for k, entry in enumerate(coco["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), (int, str)) \
                or not isinstance(entry.get("file_name"), str):
            raise DataError(f"{ann_path}: images[{k}] has no 'id' or no 'file_name'; expected {expected}")
        if entry["id"] in by_id:
            raise DataError(f"{ann_path}: image id {entry['id']} is listed twice")
        by_id[entry["id"]] = entry
    anns: dict = {i: [] for i in by_id}
    for k, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), (int, str)) \
                or ann["image_id"] not in by_id:
            ref = ann.get("image_id") if isinstance(ann, dict) else None
            raise DataError(f"{ann_path}: annotations[{k}] refers to image id {ref!r}, which 'images' does not "
                            f"list; expected {expected}")
        anns[ann["image_id"]].append((k, ann))
    if not by_id:
        raise DataError(f"{ann_path}: lists no image; expected {expected}")
    missing = [(e, images_root / e["file_name"]) for e in by_id.values()
               if not (images_root / e["file_name"]).is_file()]
    if missing:
        entry, path = missing[0]
        more = f" (and {len(missing) - 1} more missing images)" if len(missing) > 1 else ""
        raise DataError(f"{ann_path}: image id {entry['id']} has file_name '{entry['file_name']}', but {path} does "
                        f"not exist{more}; expected file_name relative to {images_root} ({expected})")
    entries: dict[str, tuple[dict, Path, list]] = {}
    unannotated = []
    for image_id, entry in by_id.items():
        path = images_root / entry["file_name"]
        if not any(not a.get("iscrowd") for _, a in anns[image_id]):
            unannotated.append(entry["file_name"])
            continue
        if path.stem in entries:
            raise DataError(f"{ann_path}: file_names '{entry['file_name']}' and '{entries[path.stem][0]['file_name']}' "
                            "give the same image id (the name without extension); expected unique names")
        entries[path.stem] = (entry, path, anns[image_id])
    if not entries:
        raise DataError(f"{ann_path}: no image has an annotation (a non-crowd one); expected {expected}")
    categories = coco.get("categories") if isinstance(coco.get("categories"), list) else []
    info = {"annotations_file": str(ann_path), "images_folder": str(images_root),
            "categories": sorted(str(c.get("name", c.get("id"))) for c in categories if isinstance(c, dict)),
            "images_without_annotations": sorted(unannotated)}
    return ann_path, entries, info


def _paint_coco(ann_path: Path, entry: dict, anns: list, shape: tuple[int, int], counts: dict) -> np.ndarray:
    """Paint the image's annotations in file order (the later wins where they overlap) -> int32 label map."""
    from skimage.segmentation import relabel_sequential

    h, w = shape
    labels = np.zeros((h, w), np.int32)
    painted = 0
    for k, ann in anns:
        if ann.get("iscrowd"):
            counts["crowd_annotations"] += 1
            continue
        mask = _annotation_mask(ann, h, w, f"{ann_path}: annotations[{k}] (id {ann.get('id')}, image "
                                           f"'{entry['file_name']}')")
        if not mask.any():
            counts["empty_annotations"] += 1
            continue
        counts["overlap_pixels"] += int((labels[mask] > 0).sum())
        painted += 1
        labels[mask] = painted
    present = len(np.unique(labels)) - (1 if (labels == 0).any() else 0)
    counts["hidden_annotations"] += painted - present
    return relabel_sequential(labels)[0].astype(np.int32)


# ---------------------------------------------------------------------------------------------- convert


class _Tally:
    """What the images were, for the manifest's normalisation and channel records."""

    def __init__(self):
        self.dtypes: dict[str, int] = {}
        self.channels_in: dict[str, int] = {}
        self.out: dict[str, int] = {"gray": 0, "rgb": 0}
        self.rescaled = 0
        self.padded = 0

    def add(self, image: np.ndarray, record: dict) -> None:
        self.dtypes[record["dtype"]] = self.dtypes.get(record["dtype"], 0) + 1
        key = str(record["channels_in"])
        self.channels_in[key] = self.channels_in.get(key, 0) + 1
        self.out["gray" if image.ndim == 2 else "rgb"] += 1
        self.rescaled += int(record["rescaled"])
        self.padded += int(record["padded"])


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _coco_sample(ann_path: Path, entry: dict, path: Path, anns: list, options: FolderOptions,
                 counts: dict) -> tuple[np.ndarray, dict, np.ndarray, LabelInfo]:
    image, record = canonical_image(_read_file(path), str(path), options.channels)
    h, w = image.shape[:2]
    size = (entry.get("height"), entry.get("width"))
    if None not in size and size != (h, w):
        raise DataError(f"{path}: image is {h}x{w} but {ann_path} gives it height {size[0]}, width {size[1]}; "
                        "expected the same size")
    labels = _paint_coco(ann_path, entry, anns, (h, w), counts)
    check_pair(image, labels, str(path), f"{ann_path} ('{entry['file_name']}')", "object")
    return image, record, labels, LabelInfo(int(labels.max()), "coco", 0, multi_piece(labels))


def _pair_sample(image_path: Path, label_path: Path, options: FolderOptions
                 ) -> tuple[np.ndarray, dict, np.ndarray, LabelInfo]:
    image, record = canonical_image(_read_file(image_path), str(image_path), options.channels)
    labels, info = decode_labels(_read_file(label_path), str(label_path))
    check_pair(image, labels, str(image_path), str(label_path), "object")
    return image, record, labels, LabelInfo(info.objects, info.encoding, 0, info.multi_piece)


def convert_folder(options: FolderOptions, raw_dir: Path | None, out: Path) -> dict:
    why = folder_unavailable(options)
    if why:
        raise DataError(why)
    root = require_path(options.path, "path")
    expected = f"layout {options.layout}: {layout_text(options)}"
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; options.path must be the folder holding the data ({expected})")
    extra: dict = {}
    if options.layout == "coco":
        counts = {"crowd_annotations": 0, "empty_annotations": 0, "overlap_pixels": 0, "hidden_annotations": 0}
        ann_path, entries, coco_info = _coco_entries(root, options)
        samples = {image_id: (lambda e=entry: _coco_sample(ann_path, *e, options, counts))
                   for image_id, entry in sorted(entries.items())}
        skipped = {"images_without_annotations": coco_info.pop("images_without_annotations")}
        extra["coco"] = coco_info
    else:
        pairs, skipped = (_pairs_canonical if options.layout == "canonical" else _pairs_cellpose)(root, options)
        samples = {image_id: (lambda pair=pair: _pair_sample(pair[0], pair[1], options))
                   for image_id, pair in pairs.items()}
    stats, tally = LabelStats(), _Tally()
    with StagedOutput(out) as staged:
        for image_id, make in samples.items():
            try:
                image, record, labels, info = make()
            except DataError as exc:  # name the layout the folder was read as, whatever failed
                raise DataError(f"{exc} [{expected}]") from exc
            staged.add(image_id, image, labels)
            stats.add(image_id, info)
            tally.add(image, record)
        staged.commit()
    if options.layout == "coco":  # the counts were filled while painting
        extra["coco"].update(counts, overlap_rule="annotations painted in file order: the later one wins where "
                             "they overlap; crowd annotations (iscrowd 1) left out as background")
    ids = list(samples)
    return {"source": "folder", "layout": options.layout, "images": len(ids), "objects": stats.objects,
            "ids": ids, "path": str(root),
            "normalisation": {"rule": NORMALISATION, "images_rescaled": tally.rescaled,
                              "pixel_types": dict(sorted(tally.dtypes.items()))},
            "channels": {"rule": CHANNEL_RULE, "kept": options.channels or "first three",
                         "input_channels": dict(sorted(tally.channels_in.items())), "output": tally.out,
                         "padded_to_rgb": tally.padded},
            "label_encoding": stats.encodings,
            "multi_piece_objects": {"note": "objects whose pixels form more than one connected piece (kept as one)",
                                    "count": int(sum(stats.multi_piece.values())),
                                    "per_image": dict(sorted(stats.multi_piece.items()))},
            "skipped": skipped, **extra}


register_source(Source("folder", FolderOptions, convert_folder, unavailable=folder_unavailable,
                       description="your own images and masks: a canonical, Cellpose-style or COCO folder"))
