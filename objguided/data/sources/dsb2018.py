"""DSB2018 (BBBC038v1 ``stage1_train.zip``, CC0): fetch the archive, convert it to canonical images.

Two sources: ``dsb2018`` (stage1_train, the paper's data; any archive in the same layout converts, and the
manifest's ``set`` says which it was: ``stage1_train``, ``stage1_test``, ``stage2`` or ``user``, see
:func:`which_set`; from the official URL it must hold stage1_train's 670 images) and
``dsb2018-stage1-test``, an extra set: the 65 stage1_test images with their masks from
``stage1_solution.csv`` (Kaggle run-length encoding).

The archive's layout (the official download, and the mirror in ``../shared/data/dsb2018``)::

    <id>/images/<id>.png        the image, RGBA (alpha is constant: dropped)
    <id>/masks/<mask>.png       one binary mask per nucleus (0 / 255), the image's size

Conversion reads the members straight from the zip (nothing is extracted), one image per task over a
process pool, and writes ``images/<id>.png`` (RGB uint8) and ``labels/<id>.png`` (uint16): instance ``k``
is the ``k``-th mask file of the image in name order. Overlapping masks (none in stage1_train) are
painted largest first, so the smaller object stays on top; overlaps are counted in the manifest, as are
objects that smaller ones hide completely (which then have no pixel in the label map).

Every member is checked; a truncated or corrupt archive, an unreadable image or mask, a mask of another
size than its image, an empty mask or a member outside the layout stops the conversion with a
:class:`~objguided.errors.DataError` naming the member and what was expected. The new folder is built
aside (``<out>/.convert-*``) and swapped in only when every image converted, so a failed conversion leaves
an earlier output as it was.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from objguided.config import Count
from objguided.data.canonical import IMAGE_DIR, LABEL_DIR, MANIFEST, write_sample
from objguided.data.fetch import check_url, download, file_name, sha256_of
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

OFFICIAL_URL = "https://data.broadinstitute.org/bbbc/BBBC038/stage1_train.zip"
TEST_URL = "https://data.broadinstitute.org/bbbc/BBBC038/stage1_test.zip"
SOLUTION_URL = "https://data.broadinstitute.org/bbbc/BBBC038/stage1_solution.csv"
#: sha256 of the mirror in ../shared/data/dsb2018 (the Broad publishes none; see datasets/dsb2018.yaml)
MIRROR_SHA256 = "29ba5f4e4c6a919e58deb87d92af4b8877dbab18eb7871627d63c43ef9348427"
ARCHIVE_SIZE = 82_854_945
#: images of stage1_train (datasets/dsb2018.yaml expect.images; a test holds the two equal)
STAGE1_TRAIN_IMAGES = 670
#: the Broad's archive names and the set each is; any other name is a user's own set
SETS = {"stage1_train.zip": "stage1_train", "stage1_test.zip": "stage1_test", "stage2_test_final.zip": "stage2"}
LAYOUT = "<id>/images/<id>.png and <id>/masks/<mask>.png"
TEST_LAYOUT = "<id>/images/<id>.png only"
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class DSB2018Options:
    url: str = OFFICIAL_URL  # https://, http:// or file:// (file://rel/path: relative to the working dir)
    sha256: list = field(default_factory=lambda: [MIRROR_SHA256])  # accepted sha256 values
    size: Count = ARCHIVE_SIZE  # expected bytes, checked when only the first-download lock vouches; 0: off
    lock: bool = True  # record the first download's sha256 (<archive>.sha256.lock) and hold later ones to it
    retries: Count = 3
    workers: Count = 0  # conversion processes; 0: every core this process may use

    def __post_init__(self):
        check_url(self.url, "options.url")
        if not all(isinstance(v, str) for v in self.sha256):
            raise ConfigError("options.sha256: expected a list of sha256 strings")


# ---------------------------------------------------------------------------------------------- fetch


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable zip archive ({exc})") from exc
    if bad is not None:
        raise DataError(f"{path}: member '{bad}' fails its CRC check")


def fetch_dsb2018(options: DSB2018Options, raw_dir: Path) -> dict:
    record = download(options.url, raw_dir, sha256=options.sha256, lock=options.lock, size=options.size,
                      retries=options.retries, check=_check_zip)
    return {"source": "dsb2018", "files": [record]}


# ---------------------------------------------------------------------------------------------- layout


def archive_index(zf: zipfile.ZipFile, archive: Path, masks: bool = True) -> dict[str, dict]:
    """id -> {"image": member, "masks": [members, sorted]}; every member must fit the layout.

    ``masks``: the layout has ``<id>/masks/`` (stage1_train), or images only (stage1_test).
    """
    layout = LAYOUT if masks else TEST_LAYOUT
    index: dict[str, dict] = {}
    for info in zf.infolist():
        name = info.filename
        if name.startswith("__MACOSX/") or Path(name).name.startswith("."):
            continue  # archive tool litter (a re-zipped copy), never data
        if name.endswith("/"):
            continue
        parts = name.split("/")
        if len(parts) == 3 and _ID.match(parts[0]) and parts[1] == "images" and parts[2] == f"{parts[0]}.png":
            entry = index.setdefault(parts[0], {"image": None, "masks": []})
            entry["image"] = name
        elif (masks and len(parts) == 3 and _ID.match(parts[0]) and parts[1] == "masks"
              and parts[2].lower().endswith(".png")):
            index.setdefault(parts[0], {"image": None, "masks": []})["masks"].append(name)
        else:
            raise DataError(f"{archive}: member '{name}' is outside the DSB2018 layout; expected only "
                            f"{layout} (the archive as downloaded, not re-packed in another folder)")
    if not index:
        raise DataError(f"{archive}: no image in the archive; expected {layout}")
    for image_id, entry in index.items():
        if entry["image"] is None:
            raise DataError(f"{archive}: '{image_id}/' has masks but no image; expected "
                            f"'{image_id}/images/{image_id}.png'")
        if masks and not entry["masks"]:
            raise DataError(f"{archive}: '{image_id}/' has no mask; expected at least one "
                            f"'{image_id}/masks/<mask>.png' (stage1_train annotates every image)")
        entry["masks"].sort()
    return dict(sorted(index.items()))


# ---------------------------------------------------------------------------------------------- convert


def _open_png(zf: zipfile.ZipFile, archive: Path, member: str) -> Image.Image:
    try:
        data = zf.read(member)
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{archive}: member '{member}' is damaged in the archive ({exc}); delete the archive "
                        "and fetch it again") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{archive}: member '{member}' cannot be read as a PNG image ({exc})") from exc


def read_image_member(zf: zipfile.ZipFile, archive: Path, member: str) -> np.ndarray:
    im = _open_png(zf, archive, member)
    if im.mode not in ("RGBA", "RGB", "LA", "L", "P"):
        raise DataError(f"{archive}: member '{member}' is a {im.mode} image; expected 8-bit RGBA or RGB")
    return np.asarray(im.convert("RGB"))


def read_mask_member(zf: zipfile.ZipFile, archive: Path, member: str, shape: tuple[int, int]) -> np.ndarray:
    """The mask's pixels as flat indices into the image."""
    im = _open_png(zf, archive, member)
    if im.mode not in ("L", "1", "P", "I", "I;16"):
        im = im.convert("L")
    if (im.height, im.width) != shape:
        raise DataError(f"{archive}: mask '{member}' is {im.width}x{im.height} (WxH) but its image is "
                        f"{shape[1]}x{shape[0]}; every mask must be the size of its image")
    box = im.getbbox()  # in C: only the nucleus' bounding box goes through numpy
    if box is None:
        raise DataError(f"{archive}: mask '{member}' is empty (no foreground pixel); expected one nucleus "
                        "per mask file")
    rows, cols = np.nonzero(np.asarray(im.crop(box)))
    pixels = (rows + box[1]).astype(np.int64) * shape[1] + (cols + box[0])
    return pixels


def paint(masks: list[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Label map from flat-index masks (instance k+1 = masks[k]); the smaller object wins an overlap.

    >>> labels, stats = paint([np.array([0, 1, 2, 3]), np.array([2, 3]), np.array([8])], (3, 3))
    >>> labels.tolist(), stats
    ([[1, 1, 2], [2, 0, 0], [0, 0, 3]], {'overlap_pixels': 2, 'overlapping_objects': 2, 'hidden_objects': 0})
    """
    labels = np.zeros(shape[0] * shape[1], np.uint16)
    areas = np.array([m.size for m in masks])
    for k in np.argsort(-areas, kind="stable"):  # largest first: smaller objects end on top
        labels[masks[k]] = k + 1
    stats = {"overlap_pixels": 0, "overlapping_objects": 0, "hidden_objects": 0}
    if int(areas.sum()) != int(np.count_nonzero(labels)):  # some pixel is claimed twice
        cover = np.bincount(np.concatenate(masks), minlength=labels.size)
        stats["overlap_pixels"] = int(np.count_nonzero(cover > 1))
        stats["overlapping_objects"] = int(sum(bool(np.any(cover[m] > 1)) for m in masks))
        stats["hidden_objects"] = len(masks) - (len(np.unique(labels)) - 1)
    return labels.reshape(shape), stats


#: encoding at PIL's default level was 40% of the conversion's CPU time; level 1 is about 3x faster
FAST_PNG_LEVEL = 1


_WORKER: dict = {}


def _worker_init(archive: str, stage: str) -> None:
    _WORKER["zf"] = zipfile.ZipFile(archive)
    _WORKER["archive"] = Path(archive)
    _WORKER["stage"] = Path(stage)


def _convert_one(task: tuple[str, str, list]) -> dict:
    """One image: ``masks`` are mask members of the zip, or (where, rle, height, width) solution rows."""
    image_id, image_member, masks_from = task
    zf, archive = _WORKER["zf"], _WORKER["archive"]
    image = read_image_member(zf, archive, image_member)
    shape = image.shape[:2]
    masks = [read_mask_member(zf, archive, m, shape) if isinstance(m, str) else rle_pixels(*m, shape=shape)
             for m in masks_from]
    if len(masks) > np.iinfo(np.uint16).max:
        raise DataError(f"{archive}: '{image_id}/' has {len(masks)} masks; a uint16 label map holds 65535")
    labels, stats = paint(masks, shape)
    write_sample(_WORKER["stage"], image_id, image, labels, compress_level=FAST_PNG_LEVEL)
    return {"id": image_id, "masks": len(masks), "objects": len(masks) - stats["hidden_objects"], **stats}


def _workers(options, n_tasks: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(options.workers or cores, n_tasks))


def _run(tasks: list, archive: Path, stage: Path, workers: int) -> list[dict]:
    bar = dict(total=len(tasks), desc="convert dsb2018", unit="img", mininterval=5)
    if workers == 1:
        _worker_init(str(archive), str(stage))
        try:
            return [_convert_one(t) for t in tqdm(tasks, **bar)]
        finally:
            _WORKER.pop("zf").close()
    # large images first, so no worker is left with a big one at the end
    order = sorted(tasks, key=lambda t: -len(t[2]))
    with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(str(archive), str(stage))) as pool:
        try:
            return list(tqdm(pool.map(_convert_one, order, chunksize=4), **bar))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _swap_in(stage: Path, out: Path) -> None:
    """Replace out's images/ and labels/ by the staged ones; the old manifest goes first (incomplete)."""
    (out / MANIFEST).unlink(missing_ok=True)
    old = stage / ".old"
    old.mkdir()
    for sub in (IMAGE_DIR, LABEL_DIR):
        if (out / sub).exists():
            os.replace(out / sub, old / sub)
        os.replace(stage / sub, out / sub)


def _required(raw_dir: Path | None, url: str, what: str) -> Path:
    if raw_dir is None:
        raise ConfigError("source dsb2018: convert needs --raw, the folder `objguided fetch` filled")
    path = Path(raw_dir) / file_name(url)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; run `objguided fetch` for this dataset first")
    return path


def open_archive_index(archive: Path, masks: bool) -> dict[str, dict]:
    try:
        with zipfile.ZipFile(archive) as zf:
            return archive_index(zf, archive, masks)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc}); it is truncated or damaged: delete it "
                        "and run `objguided fetch` again") from exc


def convert_tasks(tasks: list, archive: Path, out: Path, workers: int, info: dict) -> dict:
    """Convert every task into a staging folder, swap it in, and make the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".convert-", dir=out))
    try:
        rows = _run(tasks, archive, stage, workers)
        _swap_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    rows.sort(key=lambda r: r["id"])
    overlapping = [r for r in rows if r["overlap_pixels"]]
    return {
        **info,
        "images": len(rows),
        "objects": sum(r["objects"] for r in rows),
        "mask_files": sum(r["masks"] for r in rows),
        "overlaps": {
            "policy": "smaller object on top",
            "images": len(overlapping),
            "objects": sum(r["overlapping_objects"] for r in rows),
            "pixels": sum(r["overlap_pixels"] for r in rows),
            "hidden_objects": sum(r["hidden_objects"] for r in rows),
        },
        "objects_per_image": {r["id"]: r["objects"] for r in rows},
        "ids": [r["id"] for r in rows],
    }


def which_set(archive: Path, sha256: str, images: int) -> dict:
    """Which DSB2018 set an archive is: the mirror's hash says stage1_train; else the Broad's file name, but a
    stage1_train.zip without stage1_train's 670 images is a user's set.

    >>> which_set(Path("stage2_test_final.zip"), "", 3011)["set"], which_set(Path("mine.zip"), "", 5)["set"]
    ('stage2', 'user')
    """
    name = SETS.get(archive.name.lower(), "user")
    if sha256 == MIRROR_SHA256 or (name == "stage1_train" and images == STAGE1_TRAIN_IMAGES):
        return {"set": "stage1_train", "expected_images": STAGE1_TRAIN_IMAGES}
    if name == "stage1_train":
        return {"set": "user", "set_note": f"named stage1_train.zip but holds {images} images, not stage1_train's "
                                           f"{STAGE1_TRAIN_IMAGES}"}
    return {"set": name}


def _check_official_count(options: DSB2018Options, archive: Path, images: int) -> None:
    if options.url == OFFICIAL_URL and images != STAGE1_TRAIN_IMAGES:
        raise DataError(f"{archive}: {images} images, but the official stage1_train.zip that options.url names "
                        f"holds {STAGE1_TRAIN_IMAGES} (datasets/dsb2018.yaml expect.images): this file is not that "
                        f"set. Delete it (and {archive.name}.sha256.lock) and run `objguided fetch` again; for a "
                        "set of your own, set options.url to file://<your zip> (its count is then not checked)")


def convert_dsb2018(options: DSB2018Options, raw_dir: Path | None, out: Path) -> dict:
    archive = _required(raw_dir, options.url, "archive")
    index = open_archive_index(archive, masks=True)
    _check_official_count(options, archive, len(index))
    tasks = [(image_id, entry["image"], entry["masks"]) for image_id, entry in index.items()]
    sha256 = sha256_of(archive)
    info = {"source": "dsb2018", **which_set(archive, sha256, len(index)), "archive": archive.name,
            "archive_sha256": sha256, "url": options.url}
    return convert_tasks(tasks, archive, out, _workers(options, len(tasks)), info)


# ---------------------------------------------------------------------------------------------- stage1_test


@dataclass
class DSB2018TestOptions:
    url: str = TEST_URL  # the 65 stage1_test images, <id>/images/<id>.png
    solution_url: str = SOLUTION_URL  # their masks: CSV of ImageId, EncodedPixels (RLE), Height, Width, Usage
    sha256: list = field(default_factory=list)  # accepted sha256 values of either file
    lock: bool = True
    retries: Count = 3
    workers: Count = 0

    def __post_init__(self):
        check_url(self.url, "options.url")
        check_url(self.solution_url, "options.solution_url")
        if not all(isinstance(v, str) for v in self.sha256):
            raise ConfigError("options.sha256: expected a list of sha256 strings")


def fetch_dsb2018_test(options: DSB2018TestOptions, raw_dir: Path) -> dict:
    common = dict(sha256=options.sha256, lock=options.lock, retries=options.retries)
    return {"source": "dsb2018-stage1-test",
            "files": [download(options.url, raw_dir, check=_check_zip, **common),
                      download(options.solution_url, raw_dir, **common)]}


def rle_pixels(where: str, rle: str, height: int, width: int, shape: tuple[int, int]) -> np.ndarray:
    """Kaggle's run-length encoding (1-based starts, pixels numbered down the columns) as flat row-major
    indices into an image of ``shape``.

    >>> rle_pixels("row 2", "2 2 6 1", 3, 2, shape=(3, 2)).tolist()  # (1,0) (2,0) (2,1)
    [2, 4, 5]
    """
    if (height, width) != tuple(shape):
        raise DataError(f"{where}: Height x Width {height}x{width} but the image is {shape[0]}x{shape[1]}")
    try:
        numbers = np.array(rle.split(), dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{where}: EncodedPixels is not a list of integers ({rle[:60]!r})") from exc
    if numbers.size == 0:
        raise DataError(f"{where}: EncodedPixels is empty; expected one nucleus per row")
    if numbers.size % 2:
        raise DataError(f"{where}: EncodedPixels has an odd count of numbers; expected start length pairs")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if (starts < 0).any() or (lengths < 1).any() or (starts + lengths > height * width).any():
        raise DataError(f"{where}: EncodedPixels has a run outside the {height}x{width} image "
                        "(starts are 1-based, lengths positive)")
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    column_major = offsets + np.arange(int(lengths.sum()))
    if np.unique(column_major).size != column_major.size:
        raise DataError(f"{where}: EncodedPixels has overlapping runs")
    return (column_major % height) * width + column_major // height


def _read_solution(path: Path) -> tuple[dict[str, list], dict[str, int]]:
    """ImageId -> [(where, rle, height, width)] in file order; and the rows per Usage value."""
    rows: dict[str, list] = {}
    usage: dict[str, int] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"ImageId", "EncodedPixels", "Height", "Width"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}: no column {', '.join(sorted(missing))}; expected a stage1_solution.csv "
                                "with ImageId, EncodedPixels, Height, Width")
            for line, row in enumerate(reader, start=2):
                where = f"{path}: line {line} (ImageId {row['ImageId']})"
                try:
                    height, width = int(row["Height"]), int(row["Width"])
                except (TypeError, ValueError) as exc:
                    raise DataError(f"{where}: Height and Width must be integers") from exc
                rows.setdefault(row["ImageId"], []).append((where, row["EncodedPixels"] or "", height, width))
                usage[row.get("Usage") or "n/a"] = usage.get(row.get("Usage") or "n/a", 0) + 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc})") from exc
    return rows, usage


def convert_dsb2018_test(options: DSB2018TestOptions, raw_dir: Path | None, out: Path) -> dict:
    archive = _required(raw_dir, options.url, "archive")
    solution = _required(raw_dir, options.solution_url, "solution CSV")
    index = open_archive_index(archive, masks=False)
    rows, usage = _read_solution(solution)
    if set(rows) != set(index):
        only_csv, only_zip = sorted(set(rows) - set(index)), sorted(set(index) - set(rows))
        raise DataError(f"{solution}: its images and those of {archive} differ ({len(only_csv)} only in the CSV, "
                        f"first {only_csv[:1]}; {len(only_zip)} only in the archive, first {only_zip[:1]}); "
                        "expected the solution of this stage1_test archive")
    tasks = [(image_id, entry["image"], rows[image_id]) for image_id, entry in index.items()]
    info = {"source": "dsb2018-stage1-test", "set": "stage1_test", "archive": archive.name,
            "archive_sha256": sha256_of(archive), "url": options.url, "solution": solution.name,
            "solution_sha256": sha256_of(solution), "solution_url": options.solution_url, "usage": usage}
    return convert_tasks(tasks, archive, out, _workers(options, len(tasks)), info)


register_source(Source("dsb2018", DSB2018Options, convert_dsb2018, fetch=fetch_dsb2018,
                       description="DSB2018 / BBBC038v1 stage1_train (670 images, 29,461 nuclei, CC0)"))
register_source(Source("dsb2018-stage1-test", DSB2018TestOptions, convert_dsb2018_test, fetch=fetch_dsb2018_test,
                       description="DSB2018 / BBBC038v1 stage1_test with stage1_solution.csv (65 images; extra set)"))
