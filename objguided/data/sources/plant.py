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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from objguided.data.rawdata import (
    LabelStats,
    RawTree,
    StagedOutput,
    archive_record,
    check_pair,
    decode_image,
    decode_labels,
    missing_archive,
)
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

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
    return missing_archive(options.archive, "the Plant Phenotyping Datasets archive (Plant_Phenotyping_Datasets.zip)",
                           FORM_URL, _LAYOUT, "datasets/plant.yaml")


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
