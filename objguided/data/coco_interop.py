"""Ground truth and predictions in the form other COCO tools accept (``objguided export-coco``).

The harness names images by their file stem (``nuclei_0001``) everywhere, COCO ground truth and results
included; pycocotools takes that, but faster-coco-eval (and the COCO format itself) wants integer image
ids: it fails on ``int('nuclei_0001')``. The export numbers the images 1..n in dataset order and keeps the
stem in ``file_name`` (``images/<stem>.png``, relative to the dataset folder); a run's predictions are
rewritten with the same numbers, so both files can be given to any COCO evaluator.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from objguided.errors import DataError


def integer_image_ids(coco: dict) -> tuple[dict, dict[str, int]]:
    """(the COCO dict with image ids 1..n, the map stem -> number); ``file_name`` keeps the stem.

    >>> coco = {"images": [{"id": "b", "file_name": "images/b.png"}], "annotations": [{"id": 1, "image_id": "b"}]}
    >>> out, number = integer_image_ids(coco)
    >>> out["images"], out["annotations"][0]["image_id"], number
    ([{'id': 1, 'file_name': 'images/b.png'}], 1, {'b': 1})
    """
    number = {img["id"]: k for k, img in enumerate(coco["images"], start=1)}
    images = [{**img, "id": number[img["id"]]} for img in coco["images"]]
    for img, stem in zip(images, number):
        if PurePosixPath(img["file_name"]).stem != stem:
            raise ValueError(f"image '{stem}': file_name {img['file_name']!r} does not carry its stem")
    annotations = [{**ann, "image_id": number[ann["image_id"]]} for ann in coco["annotations"]]
    return {**coco, "images": images, "annotations": annotations}, number


def renumber_predictions(pred_path: Path, number: dict[str, int]) -> list[dict]:
    """A run's predictions (COCO results, ``image_id`` = stem; checked as ``objguided score`` checks them)
    with the export's integer image ids."""
    from objguided.metrics.coco import read_predictions

    out = []
    for k, record in enumerate(read_predictions(pred_path)):
        if record["image_id"] not in number:
            raise DataError(f"{pred_path}: record {k}: image_id {record['image_id']!r} is not an image of the "
                            "exported ground truth; export the same dataset (and --subset) the run predicted")
        out.append({**record, "image_id": number[record["image_id"]]})
    return out
