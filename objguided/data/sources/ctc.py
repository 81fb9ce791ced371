"""Source ``ctc``: a 2-D training set of the Cell Tracking Challenge (Table III of the paper).

The paper evaluates on Fluo-N2DL-HeLa, PhC-C2DH-U373 and PhC-C2DL-PSC. Each training archive,
``http://data.celltrackingchallenge.net/training-datasets/<NAME>.zip``, is laid out as (every TIFF
LZW-compressed, which tifffile reads through the ``imagecodecs`` package)::

    <NAME>/01/t000.tif, t001.tif, ...        the frames of sequence 01 (16-bit for fluorescence)
    <NAME>/01_GT/SEG/man_seg013.tif, ...     gold truth: manual instance masks of a few frames (uint16);
                                             in some sets only SOME cells of such a frame are annotated
    <NAME>/01_GT/TRA/man_track000.tif, ...   tracking markers: one marker per cell, every cell of every frame
    <NAME>/01_GT/TRA/man_track.txt           the tracks' lineage (not used)
    <NAME>/01_ST/SEG/man_seg000.tif, ...     silver truth: computer-made masks of every cell, one per frame
    <NAME>/02/..., 02_GT/..., 02_ST/...      the second sequence

``options.truth`` picks the masks: ``silver`` (every frame with a silver mask; what the paper trained on),
``gold`` (only the manually annotated frames) or ``both`` (every frame with either; gold where a frame has
both). The paper trained on silver truth plus, for PhC-C2DL-PSC, the gold frames: ``both``. The manifest
says which truth each image got (``truth_of``) and counts them. Image ids are ``01_t000``.

Partial truth (datasets/README.md, "Partial truth", is the contract with the scorer): each frame's TRA
markers are written as ``markers/<id>.png``, and ``truth_complete`` says per image whether its label map
holds every cell: silver truth does; a gold mask does when every TRA marker of its frame touches a labelled
pixel. ``truth: both`` replacing a frame's silver masks by partial gold ones is recorded
(``gold_over_silver``) and printed.

The archive must hold the set ``options.name`` names: a ``<NAME>/`` folder, or (``options.archive`` being
the set's own extracted folder) a folder of that name; another set's folder is refused, naming both.

Frames are converted to uint8 by their own 0.1 / 99.9 percentiles (as the canonical reader does for any
16-bit image); 8-bit frames are kept as they are.

Where the archive comes from: ``options.archive`` (a local zip or extracted folder, used as it is), else
the fetch step downloads ``options.url`` (default: the official URL for ``options.name``) into the raw
folder and checks its sha256 (``options.sha256``, else the hash recorded at the first download).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from objguided.data.rawdata import (
    LabelStats,
    RawTree,
    StagedOutput,
    archive_record,
    check_pair,
    decode_image,
    decode_labels,
    read_tiff,
    require_path,
)
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

PAPER_SETS = ("Fluo-N2DL-HeLa", "PhC-C2DH-U373", "PhC-C2DL-PSC")
URL = "http://data.celltrackingchallenge.net/training-datasets/{name}.zip"
TRUTHS = ("silver", "gold", "both")
_FRAME = re.compile(r"t(?P<n>\d+)\.tiff?", re.IGNORECASE)
_MASK = re.compile(r"man_seg(?P<n>\d+)\.tiff?", re.IGNORECASE)
_MARKER = re.compile(r"man_track(?P<n>\d+)\.tiff?", re.IGNORECASE)
#: a set's folder holding a sequence's frames: <set>/<seq>/tNNN.tif
_SET_FRAME = re.compile(r"(?P<prefix>(?:.*/)?)(?P<set>[^/]+)/\d\d/t\d+\.tiff?", re.IGNORECASE)
#: the challenge's naming of its data sets (Fluo-N2DL-HeLa, PhC-C2DH-U373, DIC-C2DH-HeLa, BF-C2DL-HSC...)
_SET_NAME = re.compile(r"(?:Fluo|PhC|DIC|BF)-[A-Za-z0-9+.-]+")
MARKERS = "markers"
_OLD_ARCHIVES = "; archives from before 2019 have no silver truth"
log = logging.getLogger("objguided.convert")


@dataclass
class CtcOptions:
    #: the Cell Tracking Challenge data set, e.g. Fluo-N2DL-HeLa, PhC-C2DH-U373, PhC-C2DL-PSC
    name: str = ""
    #: silver | gold | both (gold where a frame has it, silver elsewhere)
    truth: str = "silver"
    #: the sequences to convert
    sequences: list = field(default_factory=lambda: ["01", "02"])
    #: a local <NAME>.zip or its extracted folder; when set, nothing is downloaded
    archive: str = ""
    #: where the fetch step downloads from when `archive` is empty (default: the official URL for `name`)
    url: str = ""
    #: accepted sha256 of the download (the challenge publishes none: the first download's hash is recorded)
    sha256: list = field(default_factory=list)

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", self.name or ""):
            raise ConfigError(f"options.name: '{self.name}' must name a Cell Tracking Challenge data set, e.g. "
                              f"{', '.join(PAPER_SETS)}")
        if self.truth not in TRUTHS:
            raise ConfigError(f"options.truth: '{self.truth}' is not one of {', '.join(TRUTHS)}")
        if not self.sequences or not all(isinstance(s, str) and re.fullmatch(r"\d\d", s) for s in self.sequences):
            raise ConfigError(f"options.sequences: {self.sequences} must be a non-empty list like ['01', '02']")

    @property
    def download_url(self) -> str:
        return self.url or URL.format(name=self.name)


def _layout(name: str) -> str:
    return (f"{name}/01/tNNN.tif (frames), {name}/01_ST/SEG/man_segNNN.tif (silver truth), "
            f"{name}/01_GT/SEG/man_segNNN.tif (gold truth), {name}/01_GT/TRA/man_trackNNN.tif (markers), "
            "likewise for 02")


def ctc_unavailable(options: CtcOptions) -> str | None:
    path = require_path(options.archive, "archive")
    if path is None or path.exists():
        return None  # no local archive: the fetch step downloads it
    return (f"the Cell Tracking Challenge archive for {options.name} is not here (options.archive is "
            f"'{options.archive}', which does not exist). Download {URL.format(name=options.name)} and set "
            f"options.archive to it (or to the folder it was extracted to), or remove options.archive to let the "
            f"fetch step download it. Expected layout: {_layout(options.name)}. See datasets/ctc.yaml")


def fetch_ctc(options: CtcOptions, raw_dir: Path) -> dict:
    if options.archive:  # the user's copy is used in place: record what it is
        path = require_path(options.archive, "archive")
        if not path.exists():
            raise DataError(ctc_unavailable(options))
        record = archive_record(path)
        return {"files": [{"name": path.name, **record}], "local": True}
    from objguided.data.fetch import download

    record = download(options.download_url, raw_dir, sha256=options.sha256)
    return {"files": [record], "local": False}


def _archive_path(options: CtcOptions, raw_dir: Path | None) -> Path:
    if options.archive:
        return require_path(options.archive, "archive")
    if raw_dir is None:
        raise DataError(f"no archive for {options.name}: set options.archive, or run the fetch step first")
    from objguided.data.fetch import file_name

    return raw_dir / file_name(options.download_url)


def _fetched_record(raw_dir: Path | None) -> dict | None:
    """The archive's record from the fetch step (it hashed the file already), if there is one."""
    import json

    path = raw_dir / "fetched.json" if raw_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        files = json.loads(path.read_text()).get("files") or [None]
    except (OSError, ValueError):
        return None
    return files[0]


def _mismatch(options: CtcOptions, found: str, where: str) -> ConfigError:
    return ConfigError(f"options.name is '{options.name}' but {where} holds the Cell Tracking Challenge set "
                       f"'{found}', not '{options.name}': converting it would file {found}'s cells under "
                       f"{options.name}. Set options.name: {found} if that is the set you mean, or point "
                       f"options.archive (or options.url) at {options.name}.zip")


def _dataset_root(tree: RawTree, options: CtcOptions) -> str:
    """The prefix (ending with '/', or '') under which <seq>/tNNN.tif lie, checked against options.name."""
    name = options.name
    marker = f"{name}/"
    for member in tree.names:
        i = member.find(marker)
        if i >= 0 and (i == 0 or member[i - 1] == "/"):
            return member[: i + len(marker)]
    if any(re.fullmatch(r"\d\d/t\d+\.tiff?", m, re.IGNORECASE) for m in tree.names):
        # the archive path is a set's own folder: its name is the only name there is to check
        own = tree.path.stem if tree.path.suffix.lower() == ".zip" else tree.path.name
        if _SET_NAME.fullmatch(own) and own.lower() != name.lower():
            raise _mismatch(options, own, f"options.archive '{tree.path}'")
        return ""
    sets = sorted({m.group("set") for m in map(_SET_FRAME.fullmatch, tree.names) if m})
    if sets:
        raise _mismatch(options, sets[0], f"{tree.path} (its frames: {sets[0]}/01/t000.tif ...)")
    tops = sorted({m.split("/")[0] for m in tree.names})[:5]
    raise DataError(f"{tree.path}: no '{name}/' folder; expected {_layout(name)} (the archive holds: "
                    f"{', '.join(tops)}). Point options.archive at {name}.zip, the folder it was extracted to, "
                    f"or {name}/ itself")


def _numbered(tree: RawTree, folder: str, pattern: re.Pattern) -> dict[int, str]:
    out: dict[int, str] = {}
    for member in tree.names:
        if member.startswith(folder) and "/" not in member[len(folder):]:
            m = pattern.fullmatch(member[len(folder):])
            if m:
                out[int(m.group("n"))] = member
    return out


@dataclass(frozen=True)
class _Frame:
    id: str
    frame: str  # archive members
    mask: str
    truth: str  # gold | silver
    markers: str | None  # the frame's TRA marker file, if the archive has one
    silver_too: bool  # truth: both chose this frame's gold mask over its silver one


def _plan_sequence(tree: RawTree, root: str, seq: str, options: CtcOptions) -> tuple[list[_Frame], dict]:
    """The frames of one sequence to convert, and the masks it has of each truth."""
    frames = _numbered(tree, f"{root}{seq}/", _FRAME)
    if not frames:
        raise DataError(f"{tree.where(root + seq + '/')}: no frames; expected {_layout(options.name)}")
    truth = {kind: _numbered(tree, f"{root}{seq}_{tag}/SEG/", _MASK)
             for kind, tag in (("gold", "GT"), ("silver", "ST"))}
    markers = _numbered(tree, f"{root}{seq}_GT/TRA/", _MARKER)
    available = {kind: len(masks) for kind, masks in truth.items()}
    needed = ("gold", "silver") if options.truth == "both" else (options.truth,)
    if not any(truth[k] for k in needed):
        tag = {"gold": "GT", "silver": "ST"}
        raise DataError(f"{tree.where(root + seq + '_' + tag[needed[-1]] + '/SEG/')}: no man_segNNN.tif "
                        f"masks; options.truth '{options.truth}' needs them (this archive has "
                        f"{available['gold']} gold and {available['silver']} silver masks for "
                        f"sequence {seq}{_OLD_ARCHIVES if 'silver' in needed else ''})")
    width = max(len(Path(m).stem) - 1 for m in frames.values())
    for kind in needed:
        for n, mask in truth[kind].items():
            if n not in frames:
                raise DataError(f"{tree.where(mask)}: no frame {seq}/t{n:0{width}d}.tif for this mask; "
                                f"expected {_layout(options.name)}")
    plan = []
    for n in sorted(frames):
        kind = next((k for k in needed if n in truth[k]), None)
        if kind is not None:
            plan.append(_Frame(f"{seq}_t{n:0{width}d}", frames[n], truth[kind][n], kind, markers.get(n),
                               kind == "gold" and "silver" in needed and n in truth["silver"]))
    return plan, {**available, "markers": len(markers)}


def _read_markers(tree: RawTree, member: str, shape: tuple[int, int]) -> np.ndarray:
    markers = read_tiff(tree.read(member), tree.where(member))
    if markers.shape != shape or not np.issubdtype(markers.dtype, np.integer):
        raise DataError(f"{tree.where(member)}: a marker image of shape {markers.shape} and type {markers.dtype}; "
                        f"expected an integer map of the frame's size {shape[0]}x{shape[1]} (one id per cell)")
    return markers


def uncovered_markers(labels: np.ndarray, markers: np.ndarray) -> int:
    """How many marker ids have no pixel on a labelled pixel: the cells a (gold) mask leaves out.

    >>> uncovered_markers(np.array([[1, 0, 0]]), np.array([[5, 0, 7]]))
    1
    """
    ids = np.unique(markers[markers > 0])
    covered = np.unique(markers[(markers > 0) & (labels > 0)])
    return int(len(ids) - len(covered))


def _truth_record(plan: list[_Frame], missing: dict[str, int | None]) -> dict:
    """The manifest's partial-truth fields (datasets/README.md, "Partial truth")."""
    complete = {f.id: f.truth == "silver" or missing.get(f.id) == 0 for f in plan}
    partial = {i: k for i, k in missing.items() if k}
    replaced = [f.id for f in plan if f.silver_too]
    return {
        "truth_complete": complete,
        "markers": {f.id: f"{MARKERS}/{f.id}.png" for f in plan if f.markers is not None},
        "partial_truth": {"images": sum(not c for c in complete.values()), "missing_objects": partial,
                          "unverified": [f.id for f in plan if f.truth == "gold" and f.markers is None]},
        "gold_over_silver": {"images": len(replaced), "partial": [i for i in replaced if not complete[i]]},
    }


def _report_partial(options: CtcOptions, record: dict) -> None:
    over, partial = record["gold_over_silver"], record["partial_truth"]
    if partial["images"] and not over["partial"]:
        log.info("%s: %d images have partial truth (gold masks that miss cells their TRA markers show, or gold "
                 "frames without markers): manifest truth_complete, partial_truth", options.name, partial["images"])
    if over["partial"]:
        log.warning("%s: truth 'both' put gold masks in place of complete silver ones on %d frames; %d of them "
                    "annotate only some cells (%s%s): those images are partial truth (manifest: truth_complete, "
                    "gold_over_silver); use truth: silver for complete masks everywhere", options.name,
                    over["images"], len(over["partial"]), ", ".join(over["partial"][:3]),
                    " ..." if len(over["partial"]) > 3 else "")


def convert_ctc(options: CtcOptions, raw_dir: Path | None, out: Path) -> dict:
    archive = _archive_path(options, raw_dir)
    with RawTree(archive, f"the Cell Tracking Challenge archive {options.name}.zip ({_layout(options.name)})") as tree:
        root = _dataset_root(tree, options)
        plan: list[_Frame] = []
        available = {}
        for seq in options.sequences:
            frames, available[seq] = _plan_sequence(tree, root, seq, options)
            plan += frames
        stats = LabelStats()
        missing: dict[str, int | None] = {}
        with StagedOutput(out, extra_dirs=(MARKERS,)) as staged:
            for f in plan:
                image = decode_image(tree.read(f.frame), tree.where(f.frame))
                if image.ndim != 2:
                    raise DataError(f"{tree.where(f.frame)}: a frame of shape {image.shape}; expected one 2-D gray "
                                    "frame (is this a 3-D data set?)")
                labels, info = decode_labels(tree.read(f.mask), tree.where(f.mask))
                check_pair(image, labels, tree.where(f.frame), tree.where(f.mask), "cell")
                staged.add(f.id, image, labels)
                stats.add(f.id, info)
                if f.markers is not None:
                    markers = _read_markers(tree, f.markers, labels.shape)
                    staged.add_map(MARKERS, f.id, markers)
                    missing[f.id] = uncovered_markers(labels, markers)
            staged.commit()
        record = _fetched_record(raw_dir) or archive_record(archive)
    truth = _truth_record(plan, missing)
    _report_partial(options, truth)
    counts = {kind: sum(f.truth == kind for f in plan) for kind in ("gold", "silver")}
    labels_info = stats.manifest("cells")
    return {"source": "ctc", "name": options.name, "images": len(plan), "objects": stats.objects,
            "ids": [f.id for f in plan], "truth": options.truth, "truth_counts": counts,
            "truth_available": available, "truth_of": {f.id: f.truth for f in plan}, **truth,
            "multi_piece_objects": labels_info["multi_piece_objects"], "archive": record}


register_source(Source("ctc", CtcOptions, convert_ctc, fetch=fetch_ctc, unavailable=ctc_unavailable,
                       description="Cell Tracking Challenge 2-D training sets (Fluo-N2DL-HeLa, PhC-C2DH-U373, "
                                   "PhC-C2DL-PSC), silver and/or gold truth"))
