"""Run records: one evaluated (dataset, method, variant, seed) run, as the report builders take it.

A run record is a plain dict::

    {"dataset": "synth-nuclei", "method": "watershed", "variant": "default", "seed": 0,
     "label": "watershed", "paper_dataset": "dsb2018" | None, "paper_method": "mask_rcnn" | None,
     "metrics": {...metrics.json...}, "speed": {...speed.json...} | None}

``load_run`` reads one from ``results/<dataset>/<method>/<variant>/seed<k>/``; ``read_paper_table1``
reads the paper's Table I (``paper/table1.csv``, values in percent).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from objguided.errors import DataError

#: Keys a metrics.json must hold for the report builders (all AP values are fractions in [0, 1]).
METRIC_KEYS = ("thresholds", "ap_seg", "ap_dec", "ap_seg_mean", "ap_dec_mean", "ap_seg_50", "ap_seg_75")

#: Columns of the paper's Table I (AP in percent; an empty fps means "more than 1 min per image").
PAPER_TABLE1_COLUMNS = ("dataset", "method", "ap_dec", "ap_seg", "ap_seg_50", "ap_seg_75", "fps")
PAPER_TABLE1_VALUES = PAPER_TABLE1_COLUMNS[2:]


def _read_json(path: Path, what: str) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found (has this run been evaluated?)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt {what} (invalid JSON: {exc}); delete it and re-run the step") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: corrupt {what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _is_number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_metrics(metrics: Any, where: str = "metrics") -> None:
    """Raise ``DataError`` (naming ``where``) unless ``metrics`` has what the report builders read.

    >>> check_metrics({"thresholds": [0.5], "ap_seg": [0.1], "ap_dec": [0.2], "ap_seg_mean": 0.1,
    ...                "ap_dec_mean": 0.2, "ap_seg_50": 0.1, "ap_seg_75": None})
    >>> check_metrics({"thresholds": [0.5], "ap_seg": [0.1], "ap_dec": [0.2]}, "x/metrics.json")
    Traceback (most recent call last):
    ...
    objguided.errors.DataError: x/metrics.json: missing key(s) ap_seg_mean, ap_dec_mean, ap_seg_50, ap_seg_75
    """
    if not isinstance(metrics, dict):
        raise DataError(f"{where}: expected a dict of metrics, got {type(metrics).__name__}")
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
    n = None
    for key in ("thresholds", "ap_seg", "ap_dec"):
        seq = metrics[key]
        if not isinstance(seq, list) or not all(_is_number_or_none(v) for v in seq):
            raise DataError(f"{where}: {key!r} must be a list of numbers")
        if n is None:
            n = len(seq)
        elif len(seq) != n:
            raise DataError(f"{where}: {key!r} has {len(seq)} values but 'thresholds' has {n}")
    for key in ("ap_seg_mean", "ap_dec_mean", "ap_seg_50", "ap_seg_75"):
        if not _is_number_or_none(metrics[key]):
            raise DataError(f"{where}: {key!r} must be a number or null, got {metrics[key]!r}")


def check_speed(speed: Any, where: str = "speed") -> None:
    """Raise ``DataError`` unless ``speed`` is a dict with a numeric (or null) ``fps``."""
    if not isinstance(speed, dict):
        raise DataError(f"{where}: expected a dict, got {type(speed).__name__}")
    if "fps" not in speed:
        raise DataError(f"{where}: missing key 'fps'")
    if not _is_number_or_none(speed["fps"]):
        raise DataError(f"{where}: 'fps' must be a number or null, got {speed['fps']!r}")
    device = speed.get("device")
    if device is not None and not isinstance(device, str):
        raise DataError(f"{where}: 'device' must be a string, got {device!r}")


def load_run(
    run_dir: str | os.PathLike,
    dataset: str,
    method: str,
    variant: str,
    seed: int,
    label: str,
    paper_dataset: str | None = None,
    paper_method: str | None = None,
) -> dict:
    """Read ``run_dir/metrics.json`` (required) and ``run_dir/speed.json`` (optional) into a run record.

    Raises ``DataError`` naming the file when metrics.json is missing, or either file is corrupt.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path, "metrics.json")
    check_metrics(metrics, str(metrics_path))
    speed_path = run_dir / "speed.json"
    speed = None
    if speed_path.exists():
        speed = _read_json(speed_path, "speed.json")
        check_speed(speed, str(speed_path))
    return {
        "dataset": dataset,
        "method": method,
        "variant": variant,
        "seed": seed,
        "label": label,
        "paper_dataset": paper_dataset,
        "paper_method": paper_method,
        "metrics": metrics,
        "speed": speed,
    }


def read_paper_csv(path: str | os.PathLike, keys: tuple[str, ...], values: tuple[str, ...]) -> pd.DataFrame:
    """One of the paper's tables (``paper/*.csv``): the ``keys`` columns name a row, the ``values``
    columns are numbers as printed (an empty cell is NaN). Raises ``DataError`` naming the file when it is
    missing or unreadable, lacks a column, holds a non-number, leaves a key empty or repeats a row."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={k: str for k in keys})
    except FileNotFoundError:
        raise DataError(f"{path}: paper table not found") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the paper table: {exc}") from None
    missing = [c for c in keys + values if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    df = df.loc[:, list(keys + values)].copy()
    if df[list(keys)].isna().any().any():
        raise DataError(f"{path}: every row needs a {' and a '.join(keys)}")
    for col in values:
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: column {col!r} holds a non-number: {exc}") from None
    dup = df.duplicated(list(keys), keep=False)
    if dup.any():
        rows = sorted({"/".join(r) for r in df.loc[dup, list(keys)].itertuples(index=False)})
        what = keys[0] if len(keys) == 1 else f"({', '.join(keys)})"
        raise DataError(f"{path}: repeated {what} row(s): {', '.join(rows)}")
    return df.reset_index(drop=True)


def read_paper_table1(path: str | os.PathLike) -> pd.DataFrame:
    """Read the paper's Table I: columns dataset, method, ap_dec, ap_seg, ap_seg_50, ap_seg_75, fps.

    Values stay in percent, as printed in the paper; an empty fps ("more than 1 min per image") is NaN.
    """
    return read_paper_csv(path, ("dataset", "method"), PAPER_TABLE1_VALUES)


def first_seen(values) -> list:
    """The distinct values in order of first appearance.

    >>> first_seen([2, 1, 2, 3])
    [2, 1, 3]
    """
    return list(dict.fromkeys(values))


def describe_run(run: dict) -> str:
    """``dataset/method/variant/seed<k>`` of a run record, for messages."""
    return f"{run.get('dataset')}/{run.get('method')}/{run.get('variant')}/seed{run.get('seed')}"


def as_float(value: Any) -> float:
    """``None`` becomes NaN; numbers become floats.

    >>> as_float(None), as_float(3)
    (nan, 3.0)
    """
    if value is None:
        return math.nan
    return float(value)
