"""Source ``lsc``: the CVPPP 2017 Leaf Segmentation Challenge training data, from the user's own archive.

Like the Plant Phenotyping Datasets it packages (Ara2012, Ara2013-Canon, Tobacco and Ara2013-RPi images
as A1, A2, A3 and A4), the LSC data is obtained from the providers through their form
(https://www.plant-phenotyping.org/CVPPP2017-challenge) and may not be redistributed: point
``options.archive`` at the training zip you received (e.g. ``CVPPP2017_LSC_training.zip``) or at the folder
it was extracted to.

Expected layout (any folders above ``A1/`` ... are accepted)::

    .../A1/plant001_rgb.png  + plant001_label.png   (also _fg.png, _centers.png, A1.csv: not used)
    .../A2/..., .../A3/..., .../A4/...

``options.archive`` is the archive or the folder that holds ``A1/`` ... (not ``A1/`` itself: that is refused,
naming the parent to point at). ``options.subsets`` picks the collections (default A1-A4; A5, the
challenge's mixed test collection, has no labels in the training archive). Image ids are ``A1_plant001``.
Each subset's image count is checked against the training archive's (:data:`SUBSET_IMAGES`, as in
datasets/lsc.yaml): a subset that gives fewer (or none) is named in a warning and in the manifest
(``subsets_short``); the conversion goes on with what is there. An RGB image without a label image is
skipped and counted (the testing archive has no labels); if no image has a label, the conversion fails.
Labels are read as in the ``plant`` source: palette indices are instance ids; the manifest reports how
many leaves the authors' code's gray-colour rule would drop.
"""

from __future__ import annotations

import logging
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
    missing_archive,
)
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

FORM_URL = "https://www.plant-phenotyping.org/CVPPP2017-challenge"
_FILE = re.compile(r"(?:^|.*/)(?P<subset>A[1-5])/plant(?P<num>\d+)_rgb\.png$", re.IGNORECASE)
#: labelled images per subset of CVPPP2017_LSC_training.zip (the card's expect.subsets)
SUBSET_IMAGES = {"A1": 128, "A2": 31, "A3": 27, "A4": 624}
_TOP_FILE = re.compile(r"plant\d+_rgb\.png$", re.IGNORECASE)
log = logging.getLogger("objguided.convert")
_LAYOUT = "A1/plant001_rgb.png + A1/plant001_label.png (likewise A2, A3, A4), as in CVPPP2017_LSC_training.zip"


@dataclass
class LscOptions:
    #: the LSC training archive (zip) or the folder it was extracted to
    archive: str = ""
    #: which collections: any of A1, A2, A3, A4, A5
    subsets: list = field(default_factory=lambda: ["A1", "A2", "A3", "A4"])

    def __post_init__(self):
        bad = [s for s in self.subsets if not isinstance(s, str) or not re.fullmatch(r"A[1-5]", s)]
        if bad or not self.subsets:
            raise ConfigError(f"options.subsets: {self.subsets} must be a non-empty list of A1..A5")


def lsc_unavailable(options: LscOptions) -> str | None:
    return missing_archive(options.archive, "the CVPPP 2017 Leaf Segmentation Challenge data", FORM_URL, _LAYOUT,
                           "datasets/lsc.yaml")


def convert_lsc(options: LscOptions, raw_dir: Path | None, out: Path) -> dict:
    if not options.archive:
        raise DataError(lsc_unavailable(options))
    wanted = {s.upper() for s in options.subsets}
    with RawTree(options.archive, f"the CVPPP 2017 LSC training archive ({_LAYOUT})") as tree:
        names = set(tree.names)
        found: dict[str, tuple[str, str]] = {}
        unlabelled: dict[str, int] = {}
        for name in tree.names:
            m = _FILE.match(name)
            if not m or m.group("subset").upper() not in wanted:
                continue
            subset = m.group("subset").upper()
            label = name[: -len("_rgb.png")] + "_label.png"
            if label not in names:
                unlabelled[subset] = unlabelled.get(subset, 0) + 1
                continue
            image_id = f"{subset}_plant{m.group('num')}"
            if image_id in found:
                raise DataError(f"{tree.where(name)} and {tree.where(found[image_id][0])} both give the image id "
                                f"'{image_id}'; expected one labelled image per id (point options.archive at the "
                                "training archive only)")
            found[image_id] = (name, label)
        if not found:
            _refuse_subset_folder(tree)
            note = f" ({sum(unlabelled.values())} RGB images without a label image: a testing archive?)" \
                if unlabelled else ""
            raise DataError(f"{tree.path}: no labelled image of {', '.join(sorted(wanted))} found{note}; "
                            f"expected {_LAYOUT}")
        stats = LabelStats()
        per_subset: dict[str, int] = {}
        with StagedOutput(out) as staged:
            for image_id in sorted(found):
                rgb, lab = found[image_id]
                image = decode_image(tree.read(rgb), tree.where(rgb))
                labels, info = decode_labels(tree.read(lab), tree.where(lab))
                check_pair(image, labels, tree.where(rgb), tree.where(lab), "leaf")
                staged.add(image_id, image, labels)
                stats.add(image_id, info)
                per_subset[image_id[:2]] = per_subset.get(image_id[:2], 0) + 1
            staged.commit()
        record = archive_record(options.archive)
    ids = sorted(found)
    short = _short_subsets(per_subset, wanted)
    return {"source": "lsc", "images": len(ids), "objects": stats.objects, "ids": ids,
            "subsets": dict(sorted(per_subset.items())), "subsets_short": short, **stats.manifest("leaves"),
            "skipped": {"unlabelled_images": unlabelled}, "archive": record}


def _refuse_subset_folder(tree: RawTree) -> None:
    """``options.archive`` pointing at A1/ itself (plantNNN_rgb.png at its top) names the parent to use."""
    if any(_TOP_FILE.fullmatch(n) for n in tree.names):
        parent = tree.path.parent
        raise DataError(f"options.archive '{tree.path}' holds plantNNN_rgb.png files at its top: it is one "
                        f"subset's folder ({tree.path.name}/), not the archive. Point options.archive at its "
                        f"parent, '{parent}', the folder that holds A1/, A2/, A3/, A4/ (or at the training zip)")


def _short_subsets(per_subset: dict[str, int], wanted: set[str]) -> dict[str, dict]:
    """Subsets asked for that gave fewer images than the training archive holds; warned about by name."""
    short = {s: {"images": per_subset.get(s, 0), "expected": n} for s, n in sorted(SUBSET_IMAGES.items())
             if s in wanted and per_subset.get(s, 0) < n}
    if short:
        log.warning("CVPPP 2017 LSC: fewer images than CVPPP2017_LSC_training.zip holds in %s (datasets/lsc.yaml "
                    "expect.subsets); is the archive complete, and does options.subsets name what you meant?",
                    ", ".join(f"{s}: {v['images']} of {v['expected']}" for s, v in short.items()))
    return short


register_source(Source("lsc", LscOptions, convert_lsc, unavailable=lsc_unavailable,
                       description="CVPPP 2017 Leaf Segmentation Challenge A1-A4 (user's own archive)"))
