"""Source ``ctc``: a 2-D training set of the Cell Tracking Challenge (Table III of the paper).

The paper evaluates on Fluo-N2DL-HeLa, PhC-C2DH-U373 and PhC-C2DL-PSC. Each training archive,
``http://data.celltrackingchallenge.net/training-datasets/<NAME>.zip``, is laid out as::

    <NAME>/01/t000.tif, t001.tif, ...        the frames of sequence 01 (16-bit for fluorescence)
    <NAME>/01_GT/SEG/man_seg013.tif, ...     gold truth: manual instance masks of a few frames (uint16)
    <NAME>/01_GT/TRA/...                     tracking markers (not used)
    <NAME>/01_ST/SEG/man_seg000.tif, ...     silver truth: computer-made masks, one per frame
    <NAME>/02/..., 02_GT/..., 02_ST/...      the second sequence

``options.truth`` picks the masks: ``silver`` (every frame with a silver mask; what the paper trained on),
``gold`` (only the manually annotated frames) or ``both`` (every frame with either; gold where a frame has
both). The paper trained on silver truth plus, for PhC-C2DL-PSC, the gold frames: ``both``. The manifest
says which truth each image got (``truth_of``) and counts them. Image ids are ``01_t000``.

Frames are converted to uint8 by their own 0.1 / 99.9 percentiles (as the canonical reader does for any
16-bit image); 8-bit frames are kept as they are.

Where the archive comes from: ``options.archive`` (a local zip or extracted folder, used as it is), else
the fetch step downloads ``options.url`` (default: the official URL for ``options.name``) into the raw
folder and checks its sha256 (``options.sha256``, else the hash recorded at the first download).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from objguided.data.rawdata import (
    LabelStats,
    RawTree,
    StagedOutput,
    archive_record,
    check_pair,
    decode_image,
    decode_labels,
    require_path,
)
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

PAPER_SETS = ("Fluo-N2DL-HeLa", "PhC-C2DH-U373", "PhC-C2DL-PSC")
URL = "http://data.celltrackingchallenge.net/training-datasets/{name}.zip"
TRUTHS = ("silver", "gold", "both")
_FRAME = re.compile(r"t(?P<n>\d+)\.tiff?", re.IGNORECASE)
_MASK = re.compile(r"man_seg(?P<n>\d+)\.tiff?", re.IGNORECASE)


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
            f"{name}/01_GT/SEG/man_segNNN.tif (gold truth), likewise for 02")


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


def _dataset_root(tree: RawTree, name: str) -> str:
    """The prefix (ending with '/', or '') under which <seq>/tNNN.tif lie."""
    marker = f"{name}/"
    for member in tree.names:
        i = member.find(marker)
        if i >= 0 and (i == 0 or member[i - 1] == "/"):
            return member[: i + len(marker)]
    if any(re.fullmatch(r"\d\d/t\d+\.tiff?", m, re.IGNORECASE) for m in tree.names):
        return ""  # the archive path is the data set's own folder
    tops = sorted({m.split("/")[0] for m in tree.names})[:5]
    raise DataError(f"{tree.path}: no '{name}/' folder; expected {_layout(name)} (the archive holds: "
                    f"{', '.join(tops)}). Is options.name right?")


def _numbered(tree: RawTree, folder: str, pattern: re.Pattern) -> dict[int, str]:
    out: dict[int, str] = {}
    for member in tree.names:
        if member.startswith(folder) and "/" not in member[len(folder):]:
            m = pattern.fullmatch(member[len(folder):])
            if m:
                out[int(m.group("n"))] = member
    return out


def convert_ctc(options: CtcOptions, raw_dir: Path | None, out: Path) -> dict:
    archive = _archive_path(options, raw_dir)
    with RawTree(archive, f"the Cell Tracking Challenge archive {options.name}.zip ({_layout(options.name)})") as tree:
        root = _dataset_root(tree, options.name)
        plan: list[tuple[str, str, str, str]] = []  # (id, frame member, mask member, truth)
        counts = {"gold": 0, "silver": 0}
        available = {}
        for seq in options.sequences:
            frames = _numbered(tree, f"{root}{seq}/", _FRAME)
            if not frames:
                raise DataError(f"{tree.where(root + seq + '/')}: no frames; expected {_layout(options.name)}")
            truth = {kind: _numbered(tree, f"{root}{seq}_{tag}/SEG/", _MASK)
                     for kind, tag in (("gold", "GT"), ("silver", "ST"))}
            available[seq] = {kind: len(masks) for kind, masks in truth.items()}
            needed = ("gold", "silver") if options.truth == "both" else (options.truth,)
            if not any(truth[k] for k in needed):
                tag = {"gold": "GT", "silver": "ST"}
                raise DataError(f"{tree.where(root + seq + '_' + tag[needed[-1]] + '/SEG/')}: no man_segNNN.tif "
                                f"masks; options.truth '{options.truth}' needs them (this archive has "
                                f"{available[seq]['gold']} gold and {available[seq]['silver']} silver masks for "
                                f"sequence {seq}{'; archives from before 2019 have no silver truth' if 'silver' in needed else ''})")
            width = max(len(Path(m).stem) - 1 for m in frames.values())
            for kind in needed:
                for n, mask in truth[kind].items():
                    if n not in frames:
                        raise DataError(f"{tree.where(mask)}: no frame {seq}/t{n:0{width}d}.tif for this mask; "
                                        f"expected {_layout(options.name)}")
            for n in sorted(frames):
                kind = next((k for k in needed if n in truth[k]), None)
                if kind is None:
                    continue
                plan.append((f"{seq}_t{n:0{width}d}", frames[n], truth[kind][n], kind))
        stats = LabelStats()
        truth_of = {}
        with StagedOutput(out) as staged:
            for image_id, frame, mask, kind in plan:
                image = decode_image(tree.read(frame), tree.where(frame))
                if image.ndim != 2:
                    raise DataError(f"{tree.where(frame)}: a frame of shape {image.shape}; expected one 2-D gray "
                                    "frame (is this a 3-D data set?)")
                labels, info = decode_labels(tree.read(mask), tree.where(mask))
                check_pair(image, labels, tree.where(frame), tree.where(mask), "cell")
                staged.add(image_id, image, labels)
                stats.add(image_id, info)
                truth_of[image_id] = kind
                counts[kind] += 1
            staged.commit()
        record = _fetched_record(raw_dir) or archive_record(archive)
    labels_info = stats.manifest("cells")
    return {"source": "ctc", "name": options.name, "images": len(plan), "objects": stats.objects,
            "ids": [p[0] for p in plan], "truth": options.truth, "truth_counts": counts,
            "truth_available": available, "truth_of": truth_of,
            "multi_piece_objects": labels_info["multi_piece_objects"], "archive": record}


register_source(Source("ctc", CtcOptions, convert_ctc, fetch=fetch_ctc, unavailable=ctc_unavailable,
                       description="Cell Tracking Challenge 2-D training sets (Fluo-N2DL-HeLa, PhC-C2DH-U373, "
                                   "PhC-C2DL-PSC), silver and/or gold truth"))
