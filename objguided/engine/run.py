"""The harness side of a run: train, predict and time any registered method on a canonical dataset.

A method only maps data to a state and a state plus images to instances; here the harness adds the
seeding, the device slot, the model file (method, variant, config, state, provenance), the progress
bars and the timing protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm import tqdm

import methods
from objguided.data.canonical import CanonicalDataset
from objguided.engine.atomic import atomic_path, write_json
from objguided.engine.device import claim_device
from objguided.engine.provenance import describe_device, provenance
from objguided.engine.seeding import seed_everything
from objguided.errors import DataError

log = logging.getLogger(__name__)
MODEL_FORMAT = "objguided-model/1"


def train_run(method_name: str, variant: str, params: dict, data_root: str | Path, split_path: str | Path,
              seed: int, out_path: str | Path, device: str = "auto") -> dict:
    """Train one (method, variant, seed) and write its model file; returns the model record."""
    method = methods.get(method_name)
    cfg = method.make_config(params)
    train_set = CanonicalDataset(data_root, "train", split_path)
    val_set = CanonicalDataset(data_root, "val", split_path)
    out_path = Path(out_path)
    spec = {"method": method_name, "variant": variant, "params": params, "seed": seed,
            "data": str(data_root), "split": str(split_path)}
    with claim_device(device) as dev:
        seed_everything(seed)
        started = time.perf_counter()
        state = method.train(train_set, val_set, cfg, out_path.parent, dev)
        seconds = time.perf_counter() - started
        record = {"format": MODEL_FORMAT, "method": method_name, "variant": variant, "params": params,
                  "config": dataclasses.asdict(cfg), "state": state, "train_seconds": seconds,
                  "provenance": provenance(spec, seed, dev)}
    save_model(out_path, record)
    log.info("trained %s/%s seed %d in %.1f s", method_name, variant, seed, seconds)
    return record


def save_model(path: str | Path, record: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(record, tmp)


def load_model(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model file not found; run `objguided train` first")
    try:
        record = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise DataError(f"{path}: cannot be read as a model file ({exc}); re-run training") from exc
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise DataError(f"{path}: not an objguided model file (expected format {MODEL_FORMAT})")
    return record


def _predictor(record: dict, device: str):
    method = methods.get(record["method"])
    cfg = method.make_config(record["params"])
    return lambda images: method.predict(record["state"], images, cfg, device)


def predict_run(model_path: str | Path, data_root: str | Path, split_path: str | Path, subset: str,
                out_path: str | Path, device: str = "auto") -> int:
    """Predict every image of ``subset`` and write a COCO results JSON; returns the number of instances."""
    from objguided.metrics.coco import encode_instances, write_predictions

    record = load_model(model_path)
    dataset = CanonicalDataset(data_root, subset, split_path)
    images = (dataset.image(i) for i in dataset.ids)
    records: list[dict] = []
    with claim_device(device) as dev:
        outputs = _predictor(record, dev)(images)
        for image_id, instances in tqdm(zip(dataset.ids, outputs), total=len(dataset), desc="predict",
                                        unit="img", mininterval=5):
            records.extend(encode_instances(image_id, instances))
    write_predictions(out_path, records)
    return len(records)


def _timed(images: Iterable[np.ndarray], stamps: list[float]) -> Iterator[np.ndarray]:
    for image in images:
        stamps.append(time.perf_counter())
        yield image


def time_run(model_path: str | Path, data_root: str | Path, split_path: str | Path, subset: str,
             out_path: str | Path, device: str = "auto", max_images: int | None = None) -> dict:
    """FPS as the paper measures it: batch 1, whole inference per image, first image dropped.

    Images are read into memory first, so disk reads are not timed. The time of image i is the time
    between the method asking for it and yielding its instances (post-processing included).
    """
    record = load_model(model_path)
    dataset = CanonicalDataset(data_root, subset, split_path)
    ids = dataset.ids[: max_images] if max_images else dataset.ids
    if not ids:
        raise DataError(f"{data_root}: no images in '{subset}' to time")
    if len(ids) == 1:
        ids = ids * 2  # the first timing is dropped, so a one-image subset is timed twice
    images = [dataset.image(i) for i in ids]
    asked: list[float] = []
    seconds: list[float] = []
    with claim_device(device) as dev:
        if dev.startswith("cuda"):
            import torch

            sync = lambda: torch.cuda.synchronize(dev)  # noqa: E731
        else:
            sync = lambda: None  # noqa: E731
        for _ in _predictor(record, dev)(_timed(images, asked)):
            sync()
            seconds.append(time.perf_counter() - asked[len(seconds)])
        device_name = describe_device(dev)
    kept = seconds[1:]
    mean = float(np.mean(kept))
    result = {"fps": 1.0 / mean if mean > 0 else float("inf"), "mean_seconds": mean, "n_images": len(kept),
              "dropped_first": True, "first_seconds": seconds[0], "per_image_seconds": kept,
              "image_ids": ids[1:], "device": device_name, "batch_size": 1,
              "provenance": provenance({"model": str(model_path), "subset": subset}, None, dev)}
    result["torch"] = result["provenance"]["packages"]["torch"]
    result["cuda"] = result["provenance"]["cuda"]
    write_json(out_path, result)
    return result
