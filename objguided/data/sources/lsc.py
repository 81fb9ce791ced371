"""Source ``lsc``: the CVPPP 2017 Leaf Segmentation Challenge training data, from the user's own archive.

Like the Plant Phenotyping Datasets it packages (Ara2012, Ara2013-Canon, Tobacco and Ara2013-RPi images
as A1, A2, A3 and A4), the LSC data is obtained from the providers through their form
(https://www.plant-phenotyping.org/CVPPP2017-challenge) and may not be redistributed: point
``options.archive`` at the training zip you received (e.g. ``CVPPP2017_LSC_training.zip``) or at the folder
it was extracted to.

Expected layout (any folders above ``A1/`` ... are accepted)::

    .../A1/plant001_rgb.png  + plant001_label.png   (also _fg.png, _centers.png, A1.csv: not used)
    .../A2/..., .../A3/..., .../A4/...

``options.subsets`` picks the collections (default A1-A4; A5, the challenge's mixed test collection, has
no labels in the training archive). Image ids are ``A1_plant001``. An RGB image without a label image is
skipped and counted (the testing archive has no labels); if no image has a label, the conversion fails.
Labels are read as in the ``plant`` source: palette indices are instance ids; the manifest reports how
many leaves the authors' code's gray-colour rule would drop.
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
    missing_archive,
)
from objguided.data.sources import Source, register_source
from objguided.errors import ConfigError, DataError

FORM_URL = "https://www.plant-phenotyping.org/CVPPP2017-challenge"
_FILE = re.compile(r"(?:^|.*/)(?P<subset>A[1-5])/plant(?P<num>\d+)_rgb\.png$", re.IGNORECASE)
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
    return {"source": "lsc", "images": len(ids), "objects": stats.objects, "ids": ids,
            "subsets": dict(sorted(per_subset.items())), **stats.manifest("leaves"),
            "skipped": {"unlabelled_images": unlabelled}, "archive": record}


register_source(Source("lsc", LscOptions, convert_lsc, unavailable=lsc_unavailable,
                       description="CVPPP 2017 Leaf Segmentation Challenge A1-A4 (user's own archive)"))
