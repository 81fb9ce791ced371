"""COCO I/O for the evaluator: RLE masks, the predictions ("results") JSON, and GT export.

A predictions file is a JSON list of COCO results records::

    {"image_id": "<file stem>", "category_id": 1, "bbox": [x, y, w, h],
     "segmentation": {"size": [h, w], "counts": "<compressed RLE>"}, "score": 0.97, "soft_area": 123.4}

``image_id`` is the image's file stem (a string, as everywhere in the harness); ``category_id`` must be
:data:`CATEGORY_ID` (see :func:`check_records`: the one category rule of both evaluators); ``bbox`` is written for
COCO tools but ignored by the evaluator (boxes are recomputed from the masks); ``soft_area`` (optional)
is the sum of the prediction's soft mask over its support, for the ``soft_area`` IoU option.

The compressed RLE strings are parsed here in one vectorised pass for a whole file
(:func:`parse_rle_counts`), which both validates them (pycocotools' own decoder does not check its input)
and gives the foreground runs the evaluator works on, without ever decoding a full HxW mask.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from objguided.data.canonical import IMAGE_DIR, CanonicalDataset, read_label_map, read_split
from objguided.engine.atomic import write_json
from objguided.errors import DataError

CATEGORY_ID = 1  # the ground truth's single category: every dataset of the harness is single-class
LABEL_SUFFIXES = (".png", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------- RLE

def encode_mask(mask: np.ndarray) -> dict:
    """Boolean HxW mask -> COCO compressed RLE with ``counts`` as str (JSON-ready).

    >>> m = np.zeros((3, 4), bool); m[1, 1:3] = True
    >>> encode_mask(m)
    {'size': [3, 4], 'counts': '41202'}
    >>> bool((decode_mask(encode_mask(m)) == m).all())
    True
    """
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict, where: str = "RLE") -> np.ndarray:
    """COCO compressed RLE (counts str or bytes) -> boolean HxW mask; validated (DataError when corrupt)."""
    counts = rle["counts"]
    counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
    h, w = (int(v) for v in rle["size"])
    runs = parse_rle_counts([counts], np.array([[h, w]]), where)
    pix, _ = runs_to_pixels(runs.start, runs.length, np.zeros(runs.start.size, np.int64))
    flat = np.zeros(h * w, bool)
    flat[pix] = True
    return flat.reshape((h, w), order="F")


class Runs(NamedTuple):
    """Foreground runs of N RLE masks, in column-major (COCO) pixel order, grouped by record."""

    start: np.ndarray  # (R,) flat column-major index of each run's first pixel
    length: np.ndarray  # (R,) run length (> 0)
    first: np.ndarray  # (N + 1,) runs of record i are first[i]:first[i+1]
    area: np.ndarray  # (N,) foreground pixels per record


def parse_rle_counts(counts: Sequence[str], sizes: np.ndarray, where: str = "predictions",
                     index_of: np.ndarray | None = None) -> Runs:
    """Parse and validate COCO compressed RLE strings, all at once.

    ``sizes`` is (N, 2) [h, w]; ``where`` (a file name) and ``index_of`` (the record's index in that file)
    go into the error message. The format: each count is a little-endian base-32 number written as
    characters ``48 + 6 bits`` (bit 0x20 = more characters follow, bit 0x10 of the last one = negative);
    counts from the fourth on are stored as differences from the count two places earlier. Counts
    alternate background/foreground, starting with background, and must sum to h*w.

    >>> r = parse_rle_counts(["41202"], np.array([[3, 4]]))
    >>> r.start.tolist(), r.length.tolist(), r.area.tolist()
    ([4, 7], [1, 1], [2])
    >>> parse_rle_counts(["42"], np.array([[3, 4]]), "p.json")  # counts 4, 2: only 6 pixels
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    objguided.errors.DataError: p.json: record 0: segmentation RLE counts sum to 6 pixels but its size 3x4 has 12;
    the RLE is corrupt or its size is wrong
    """
    n = len(counts)
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)

    def fail(i: int, why: str):
        j = int(index_of[i]) if index_of is not None else int(i)
        raise DataError(f"{where}: record {j}: segmentation RLE {why}")

    if n == 0:
        z = np.zeros(0, np.int64)
        return Runs(z, z, np.zeros(1, np.int64), z)
    lens = np.fromiter((len(c) for c in counts), np.int64, n)
    if (lens == 0).any():
        fail(int(np.argmax(lens == 0)), "has empty 'counts'")
    try:
        buf = "".join(counts).encode("ascii")
    except UnicodeEncodeError:
        bad = next(i for i, c in enumerate(counts) if not c.isascii())
        fail(bad, "counts hold non-ASCII characters; expected a COCO compressed RLE string")
    u = np.frombuffer(buf, np.uint8)
    ends = np.cumsum(lens) - 1  # last character of each record
    bad = (u < 48) | (u > 111)
    if bad.any():
        fail(int(np.searchsorted(ends, np.argmax(bad))),
             "counts hold a character outside the COCO RLE alphabet ('0'..'o')")
    c = u - np.uint8(48)
    last = (c & 0x20) == 0  # this character ends a count
    if not last[ends].all():
        fail(int(np.argmax(~last[ends])), "counts end in the middle of a number (truncated?)")
    gend = np.flatnonzero(last)
    glen = np.diff(gend, prepend=-1)
    if glen.max() > 7:
        fail(int(np.searchsorted(ends, gend[np.argmax(glen > 7)])), "holds a count too large for any image")
    gstart = gend - (glen - 1)
    x = (c[gstart] & 0x1F).astype(np.int64)
    for j in range(1, int(glen.max())):  # little-endian 5-bit digits; most counts have one or two
        sel = np.flatnonzero(glen > j)
        x[sel] |= (c[gstart[sel] + j] & 0x1F).astype(np.int64) << (5 * j)
    neg = np.flatnonzero(c[gend] & 0x10)
    x[neg] -= np.left_shift(np.int64(1), 5 * glen[neg])
    gcum = np.searchsorted(gend, ends, side="right")  # counts up to the end of each record
    ngroups = np.diff(gcum, prepend=0)
    gfirst = gcum - ngroups
    m = np.arange(x.size) - np.repeat(gfirst, ngroups)  # position of each count in its record
    cnts = _undo_delta(x, m)
    bad = (cnts < 0) | (cnts >= 2**32)
    if bad.any():
        fail(int(np.searchsorted(gcum, np.argmax(bad), side="right")), "holds a negative or out-of-range count")
    total = np.add.reduceat(cnts, gfirst)
    hw = sizes[:, 0] * sizes[:, 1]
    bad = total != hw
    if bad.any():
        i = int(np.argmax(bad))
        fail(i, f"counts sum to {int(total[i])} pixels but its size {sizes[i, 0]}x{sizes[i, 1]} has {int(hw[i])}; "
                "the RLE is corrupt or its size is wrong")
    offset = np.cumsum(cnts) - cnts
    offset -= np.repeat(offset[gfirst], ngroups)
    isfg = ((m & 1) == 1) & (cnts > 0)
    fg = np.flatnonzero(isfg)
    nruns = np.add.reduceat(isfg.astype(np.int64), gfirst)
    area = np.add.reduceat(np.where(isfg, cnts, 0), gfirst)
    return Runs(offset[fg], cnts[fg], np.concatenate(([0], np.cumsum(nruns))), area)


def _undo_delta(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Undo COCO's delta coding (count i >= 3 is stored minus count i-2; ``m``: each count's position in its
    record): running sums along the even and odd chains of each record; in each global-parity stream a
    chain starts wherever m <= 2."""
    cnts = np.empty_like(x)
    head = m <= 2
    for p in (0, 1):
        v = x[p::2]
        cs = np.cumsum(v)
        hi = np.where(head[p::2], np.arange(v.size), 0)
        np.maximum.accumulate(hi, out=hi)
        cnts[p::2] = cs - (cs[hi] - v[hi])
    return cnts


def runs_to_pixels(start: np.ndarray, length: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand runs to (flat pixel indices, owner per pixel), keeping the runs' order.

    >>> pix, own = runs_to_pixels(np.array([4, 10]), np.array([2, 3]), np.array([0, 1]))
    >>> pix.tolist(), own.tolist()
    ([4, 5, 10, 11, 12], [0, 0, 1, 1, 1])
    """
    length = np.asarray(length, np.int64)
    shift = np.asarray(start, np.int64) - (np.cumsum(length) - length)
    return np.arange(int(length.sum()), dtype=np.int64) + np.repeat(shift, length), np.repeat(owner, length)


def label_map_rles(labels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Every object of a label map as a compressed RLE (str counts), without decoding HxW masks per object.

    Returns (ids ascending, RLE dicts).

    >>> lab = np.array([[0, 2, 2], [1, 0, 2]])
    >>> ids, rles = label_map_rles(lab)
    >>> ids.tolist(), [bool((decode_mask(r) == (lab == i)).all()) for i, r in zip(ids, rles)]
    ([1, 2], [True, True])
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    flat = labels.ravel(order="F")
    fg = np.flatnonzero(flat)
    if fg.size == 0:
        return np.zeros(0, np.int64), []
    lab = flat[fg]
    order = np.argsort(lab, kind="stable")
    pix, lab = fg[order], lab[order]
    new_run = np.ones(pix.size, bool)
    new_run[1:] = (lab[1:] != lab[:-1]) | (pix[1:] != pix[:-1] + 1)
    heads = np.flatnonzero(new_run)
    rstart, rlab = pix[heads], lab[heads]
    rlen = np.diff(np.concatenate((heads, [pix.size])))
    first_of_label = np.concatenate(([True], rlab[1:] != rlab[:-1]))
    prev_end = np.concatenate(([0], rstart[:-1] + rlen[:-1]))
    gap = np.where(first_of_label, rstart, rstart - prev_end)
    inter = np.stack([gap, rlen], axis=1).ravel()
    lhead = np.flatnonzero(first_of_label)
    ids = rlab[lhead]
    bounds = np.concatenate((2 * lhead, [inter.size]))
    ends = np.concatenate((rstart[lhead[1:] - 1] + rlen[lhead[1:] - 1], [rstart[-1] + rlen[-1]]))
    objs = [{"size": [h, w], "counts": inter[bounds[i]:bounds[i + 1]].tolist() + [int(h * w - ends[i])]}
            for i in range(ids.size)]
    rles = mask_utils.frPyObjects(objs, h, w)
    return ids.astype(np.int64), [{"size": [h, w], "counts": r["counts"].decode("ascii")} for r in rles]


# ------------------------------------------------------------------------------------ predictions

def encode_instances(image_id: str, instances: Iterable) -> list[dict]:
    """COCO results records of one image's instances (objects with ``.mask``, ``.score``, ``.soft_area``).

    ``bbox`` is COCO's [x, y, w, h] of the tight box in pixel extent (w = max col - min col + 1).

    >>> from types import SimpleNamespace as I
    >>> m = np.zeros((3, 4), bool); m[1, 1:3] = True
    >>> encode_instances("img1", [I(mask=m, score=0.5, soft_area=None)])  # doctest: +NORMALIZE_WHITESPACE
    [{'image_id': 'img1', 'category_id': 1, 'bbox': [1.0, 1.0, 2.0, 1.0],
      'segmentation': {'size': [3, 4], 'counts': '41202'}, 'score': 0.5}]
    """
    records = []
    for k, inst in enumerate(instances):
        mask = np.asarray(inst.mask)
        if mask.ndim != 2:
            raise DataError(f"image '{image_id}', instance {k}: mask of shape {mask.shape}; expected HxW")
        mask = mask.astype(bool)
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            raise DataError(f"image '{image_id}', instance {k}: empty mask; drop it before writing predictions")
        cols = np.flatnonzero(mask.any(axis=0))
        try:
            score = float(inst.score)
        except (TypeError, ValueError) as exc:
            raise DataError(f"image '{image_id}', instance {k}: score {inst.score!r} is not a number") from exc
        if not math.isfinite(score):
            raise DataError(f"image '{image_id}', instance {k}: non-finite score {score}")
        rec = {"image_id": str(image_id), "category_id": CATEGORY_ID,
               "bbox": [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)],
               "segmentation": encode_mask(mask), "score": score}
        soft = getattr(inst, "soft_area", None)
        if soft is not None:
            soft = float(soft)
            if not math.isfinite(soft) or soft <= 0:
                raise DataError(f"image '{image_id}', instance {k}: soft_area {soft} must be finite and > 0")
            rec["soft_area"] = soft
        records.append(rec)
    return records


def write_predictions(path, records: list[dict]) -> None:
    """Write a predictions JSON atomically."""
    write_json(path, list(records))


def load_json_list(path) -> list:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of COCO results records, got {type(data).__name__}")
    return data


def check_records(records: list, where: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Check every record's fields; returns (image ids, counts, sizes (N,2), scores, soft areas (NaN: none)).

    The category rule: a record's ``category_id`` must be the integer :data:`CATEGORY_ID`, the single category
    of the ground truth; any other value is a :class:`DataError` naming the file, the record and the expected
    id. The paper's APseg / APdec are class-agnostic and would count such a prediction, while COCO AP
    evaluates per category and would silently ignore it, so the two columns of one metrics.json would score
    different predictions. Dropping such records in both would hide the real cause: every dataset here is
    single-class, so another id means the file was written for another convention (0-based ids, a
    multi-class model, a converter bug), and rejecting it is the only rule that never scores a wrong file.
    """
    fast = _check_records_fast(records)
    if fast is not None:
        return fast
    return _check_records_slow(records, where)


def _check_records_fast(records: list):
    """The common all-valid case in bulk; None when anything is off (the slow path then names it)."""
    try:
        if not all(type(r) is dict and type(r.get("category_id")) is int and r["category_id"] == CATEGORY_ID
                   for r in records):
            return None
        ids = [r["image_id"] for r in records]
        segs = [r["segmentation"] for r in records]
        raw_scores = [r["score"] for r in records]
        counts = [s["counts"] for s in segs]
        size_list = [s["size"] for s in segs]
        raw_soft = [r.get("soft_area") for r in records]
    except (KeyError, TypeError, AttributeError):
        return None
    if not (all(type(i) is str for i in ids) and all(type(c) is str for c in counts)
            and all(type(v) in (int, float) for v in raw_scores)
            and all(type(z) is list and len(z) == 2 and type(z[0]) is int and type(z[1]) is int for z in size_list)
            and all(v is None or type(v) in (int, float) for v in raw_soft)):
        return None
    n = len(records)
    scores = np.array(raw_scores, np.float64).reshape(n)
    sizes = np.array(size_list, np.int64).reshape(n, 2)
    soft = np.array([np.nan if v is None else v for v in raw_soft], np.float64).reshape(n)
    has_soft = np.array([v is not None for v in raw_soft], bool).reshape(n)
    if (not np.isfinite(scores).all() or (sizes <= 0).any()
            or not (np.isfinite(soft[has_soft]) & (soft[has_soft] > 0)).all()):
        return None
    return ids, counts, sizes, scores, soft


def _check_records_slow(records: list, where: str):
    n = len(records)
    ids: list[str] = [""] * n
    counts: list[str] = [""] * n
    sizes = np.zeros((n, 2), np.int64)
    scores = np.zeros(n)
    soft = np.full(n, np.nan)
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(f"{where}: record {i}: expected an object, got {type(r).__name__}")
        try:
            image_id, seg, score = r["image_id"], r["segmentation"], r["score"]
        except KeyError as exc:
            raise DataError(f"{where}: record {i}: missing key {exc.args[0]!r} "
                            "(need image_id, category_id, segmentation, score)") from None
        if "category_id" not in r:
            raise DataError(f"{where}: record {i}: missing key 'category_id'")
        cat = r["category_id"]
        if type(cat) is not int or cat != CATEGORY_ID:
            raise DataError(f"{where}: record {i} (image '{image_id}'): category_id {cat!r} is not the ground "
                            f"truth's single category (expected {CATEGORY_ID}); the datasets are single-class: "
                            f"write category_id {CATEGORY_ID} for every prediction")
        if not isinstance(image_id, str):
            raise DataError(f"{where}: record {i}: image_id {image_id!r} must be a string (the image's file stem)")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"{where}: record {i} (image '{image_id}'): score {score!r} is not a finite number")
        if not isinstance(seg, dict) or not isinstance(seg.get("counts"), str):
            raise DataError(f"{where}: record {i} (image '{image_id}'): segmentation must be a compressed RLE "
                            "{'size': [h, w], 'counts': str}")
        size = seg.get("size")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise DataError(f"{where}: record {i} (image '{image_id}'): segmentation size {size!r} must be [h, w]")
        s = r.get("soft_area")
        if s is not None:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
                raise DataError(f"{where}: record {i} (image '{image_id}'): soft_area {s!r} "
                                "must be a finite number > 0")
            soft[i] = s
        ids[i], counts[i], scores[i] = image_id, seg["counts"], score
        sizes[i] = size
    return ids, counts, sizes, scores, soft


def check_nonempty(runs: Runs, ids: Sequence[str], where: str, index_of: np.ndarray | None = None) -> None:
    empty = np.flatnonzero(runs.area == 0)
    if empty.size:
        i = int(empty[0])
        j = int(index_of[i]) if index_of is not None else i
        raise DataError(f"{where}: record {j} (image '{ids[i]}'): empty mask (RLE with no foreground pixel); "
                        "drop empty instances before writing predictions")


def read_predictions(path) -> list[dict]:
    """Read and validate a predictions JSON: a list; required keys; string image ids; finite scores;
    decodable, non-empty RLE. Errors are :class:`DataError` naming the file and the record index."""
    records = load_json_list(path)
    ids, counts, sizes, _, _ = check_records(records, str(path))
    runs = parse_rle_counts(counts, sizes, str(path))
    check_nonempty(runs, ids, str(path))
    return records


# ------------------------------------------------------------------------------------------- GT

def record_images(ids: list[str], sources: list[tuple[str, Path]], where: str, gt, subset=None) -> np.ndarray:
    """The index in ``sources`` (the scored GT images) of each prediction record's image id; a record of an
    image that is not scored is a DataError naming the record, the id and the GT folder."""
    index = {image_id: k for k, (image_id, _) in enumerate(sources)}
    img = np.empty(len(ids), np.int64)
    for i, image_id in enumerate(ids):
        k = index.get(image_id)
        if k is None:
            raise DataError(f"{where}: record {i}: unknown image id '{image_id}': not one of the "
                            f"{len(sources)} scored ground-truth images in {gt}"
                            + (f" (subset '{subset}')" if subset else ""))
        img[i] = k
    return img


def gt_sources(gt, split_path=None, subset=None) -> list[tuple[str, Path]]:
    """(image id, label map path) of the GT to score, in order.

    ``gt`` is a canonical dataset folder (``images/`` + ``labels/``) or a plain folder of label maps
    (``<id>.png`` / ``<id>.tif``). With ``subset``, only the ids of that subset of the split file
    (``split_path``, default ``<gt>/split.json``) are used.
    """
    root = Path(gt)
    if not root.is_dir():
        raise DataError(f"{root}: ground-truth folder not found")
    if (root / IMAGE_DIR).is_dir():
        ds = CanonicalDataset(root, subset=subset, split_path=split_path)
        return [(i, ds.label_path(i)) for i in ds.ids]
    files: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES:
            if p.stem in files:
                raise DataError(f"{root}: two label maps for image '{p.stem}' ({files[p.stem].name}, {p.name})")
            files[p.stem] = p
    if not files:
        raise DataError(f"{root}: no label maps (<id>.png or <id>.tif) and no '{IMAGE_DIR}/' folder")
    if subset is None:
        return sorted(files.items())
    sp = Path(split_path) if split_path is not None else root / "split.json"
    split = read_split(sp)
    if subset not in split:
        raise DataError(f"{sp}: no subset '{subset}'")
    missing = [i for i in split[subset] if i not in files]
    if missing:
        raise DataError(f"{sp}: {len(missing)} ids of '{subset}' have no label map in {root} (first: {missing[0]})")
    return [(i, files[i]) for i in split[subset]]


def gt_coco_dict(items: Iterable[tuple[str, np.ndarray]]) -> dict:
    """COCO instances dict of (image id, label map) pairs; image ids stay strings; every object (none dropped)."""
    images, anns = [], []
    for image_id, labels in items:
        h, w = labels.shape
        images.append({"id": image_id, "file_name": f"{IMAGE_DIR}/{image_id}.png", "height": int(h), "width": int(w)})
        ids, rles = label_map_rles(labels)
        if ids.size:
            area = np.bincount(labels.ravel())[ids]
            boxes = mask_utils.toBbox([{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles])
            for lab, rle, a, b in zip(ids, rles, area, boxes):
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": CATEGORY_ID,
                             "segmentation": rle, "area": int(a), "bbox": [float(v) for v in b],
                             "iscrowd": 0, "label": int(lab)})
    return {"info": {"description": "objguided ground truth (canonical label maps)"},
            "images": images, "annotations": anns,
            "categories": [{"id": CATEGORY_ID, "name": "object"}]}


def export_gt_coco(dataset_root, out_path, split_path=None, subset=None) -> dict:
    """Write the label maps of a dataset (or one subset) as a COCO instances JSON and return the dict.

    Image ``id`` is the string file stem (the same ids as the predictions); annotations carry RLE, pixel
    area, COCO bbox [x, y, w, h] (pixel extent), ``iscrowd`` 0 and the source ``label``.
    """
    items = ((i, read_label_map(p)) for i, p in gt_sources(dataset_root, split_path, subset))
    coco = gt_coco_dict(items)
    write_json(out_path, coco)
    return coco
