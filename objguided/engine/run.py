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
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

import objguided_methods as methods
from objguided.data.canonical import CanonicalDataset
from objguided.engine.atomic import atomic_path, check_writable, write_json
from objguided.engine.device import claim_device
from objguided.engine.provenance import describe_device, provenance
from objguided.engine.seeding import seed_everything
from objguided.errors import DataError

log = logging.getLogger(__name__)
MODEL_FORMAT = "objguided-model/1"


def train_run(method_name: str, variant: str, params: dict, data_root: str | Path, split_path: str | Path,
              seed: int, out_path: str | Path, device: str = "auto") -> dict:
    """Train one (method, variant, seed) and write its model file; returns the model record."""
    from objguided.engine.trainer import read_progress  # torch: not at import, score jobs never need it

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
        timing = training_time(time.perf_counter() - started, read_progress(out_path.parent))
        record = {"format": MODEL_FORMAT, "method": method_name, "variant": variant, "params": params,
                  "config": dataclasses.asdict(cfg), "state": state, **timing,
                  "provenance": provenance(spec, seed, dev, split_path)}
    save_model(out_path, record)
    slim_checkpoint(out_path.parent / "checkpoint.pt")
    log.info("trained %s/%s seed %d: %.1f s of training in all (%.1f s in this job)", method_name, variant, seed,
             timing["train_seconds"], timing["train_seconds_this_job"])
    return record


def training_time(job_seconds: float, progress: dict | None) -> dict:
    """The model record's time fields. ``train_seconds`` is the run's whole training time: with a shared-trainer
    ``progress`` record, the training loop's seconds over every job of the run (a resumed or already finished
    run keeps the earlier jobs' time) plus what this job spent outside the loop (data loading, tuning on val).

    >>> training_time(3.0, {"seconds": 800.0, "seconds_this_job": 0.0, "steps": 200, "epochs": 4,
    ...                     "resumed_from_step": 200})["train_seconds"]
    803.0
    >>> training_time(3.0, None)["train_seconds"]
    3.0
    """
    if progress is None:
        return {"train_seconds": job_seconds, "train_seconds_this_job": job_seconds}
    outside_loop = max(job_seconds - progress["seconds_this_job"], 0.0)
    return {"train_seconds": progress["seconds"] + outside_loop, "train_seconds_this_job": job_seconds,
            "train_steps": progress["steps"], "train_epochs": progress["epochs"],
            "resumed_from_step": progress["resumed_from_step"],
            # the compute the steps used (the trainer's budget clock: process CPU time or CUDA-event time)
            "train_compute_seconds": progress.get("compute_seconds"),
            "train_compute_clock": progress.get("compute_clock"),
            "train_budget_seconds": progress.get("budget_seconds")}


def slim_checkpoint(path: Path) -> None:
    """Drop the optimizer's per-parameter state (Adam's moments, twice the weights) from a finished run's
    checkpoint once model.pt holds the weights: checkpoints were 3.9 of the demo's 5.3 GB. The checkpoint keeps
    the weights, step, random states and fingerprint, so a longer schedule still resumes from it; the optimizer's
    moments then start afresh, so such an extension is close to, not bit-identical with, a run planned that long
    (an interrupted, unfinished run keeps its whole checkpoint and resumes exactly)."""
    import torch

    from objguided.engine.trainer import load_checkpoint  # torch: not at import, score jobs never need it

    if not path.is_file():
        return
    ckpt = load_checkpoint(path)
    if not ckpt.get("finished") or not (ckpt.get("optimizer") or {}).get("state"):
        return
    ckpt["optimizer"] = {**ckpt["optimizer"], "state": {}}  # param_groups (the lr reached) stay
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


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
                out_path: str | Path, device: str = "auto", speed_out: str | Path | None = None) -> int:
    """Predict every image of ``subset`` and write a COCO results JSON; returns the number of instances.

    With ``speed_out``, the same pass is timed as :func:`time_run` times it (batch 1, whole inference per
    image, first image dropped) and the FPS record is written there: the DAG's speed column then comes from
    every test image, at no extra model load.

    The output folders are probed first (:func:`~objguided.engine.atomic.check_writable`): a full or read-only
    disk stops the run before the inference pass, with one line naming the path, not after it.
    """
    from objguided.metrics.coco import encode_instances, write_predictions

    record = load_model(model_path)
    dataset = CanonicalDataset(data_root, subset, split_path)
    for path in (out_path, speed_out):
        if path is not None:
            check_writable(path)
    images = (dataset.image(i) for i in dataset.ids)  # read outside the timed span (see _timed)
    records: list[dict] = []
    seconds: list[float] = []
    with claim_device(device) as dev:
        outputs = _timed_predictions(record, images, dev)
        for image_id, (instances, took) in tqdm(zip(dataset.ids, outputs), total=len(dataset), desc="predict",
                                                unit="img", mininterval=5):
            records.extend(encode_instances(image_id, instances))
            seconds.append(took)
        if speed_out is not None:
            if not seconds:
                raise DataError(f"{data_root}: no images in '{subset}' to time")
            speed = speed_record(seconds, list(dataset.ids), dev, model_path, subset)
            write_json(speed_out, speed)
            log.info("predict: %.3f FPS on %s (batch 1, whole inference per image, %d images timed%s) -> %s",
                     speed["fps"], speed["device"], speed["n_images"],
                     ", first dropped" if speed["dropped_first"] else "", speed_out)
    write_predictions(out_path, records)
    return len(records)


def _timed(images: Iterable[np.ndarray], stamps: list[float]) -> Iterator[np.ndarray]:
    for image in images:
        stamps.append(time.perf_counter())
        yield image


def _timed_predictions(record: dict, images: Iterable[np.ndarray], dev: str) -> Iterator[tuple[list, float]]:
    """Yield (instances, seconds) per image; seconds run from the method asking for the image to its
    instances (post-processing included; on a GPU after a synchronisation)."""
    if dev.startswith("cuda"):
        import torch

        sync = lambda: torch.cuda.synchronize(dev)  # noqa: E731
    else:
        sync = lambda: None  # noqa: E731
    asked: list[float] = []
    for k, instances in enumerate(_predictor(record, dev)(_timed(images, asked))):
        sync()
        yield instances, time.perf_counter() - asked[k]


def _cpu_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def speed_record(seconds: list[float], ids: list[str], dev: str, model_path: str | Path, subset: str) -> dict:
    """The FPS record of per-image times: the first image is dropped (warm-up) unless it is the only one."""
    threads = _cpu_threads()
    drop = len(seconds) > 1
    kept = seconds[1:] if drop else seconds
    mean = float(np.mean(kept))
    result = {"fps": 1.0 / mean if mean > 0 else float("inf"), "mean_seconds": mean, "n_images": len(kept),
              "dropped_first": drop, "first_seconds": seconds[0], "per_image_seconds": kept,
              "image_ids": ids[1:len(seconds)] if drop else ids[:1], "cpu_threads": threads,
              # the report's FPS column shows this string: CPU timings depend on the thread count
              "device": f"{describe_device(dev)}, {threads} CPU threads",
              "batch_size": 1, "provenance": provenance({"model": str(model_path), "subset": subset}, None, dev)}
    result["torch"] = result["provenance"]["packages"]["torch"]
    result["cuda"] = result["provenance"]["cuda"]
    return result


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
    check_writable(out_path)  # before the timed pass, not after it
    images = [dataset.image(i) for i in ids]
    with claim_device(device) as dev:
        seconds = [took for _, took in _timed_predictions(record, images, dev)]
        result = speed_record(seconds, list(ids), dev, model_path, subset)
    write_json(out_path, result)
    return result
