"""Table I: APdec, APseg, APseg@0.50, APseg@0.75 (percent) and FPS per dataset and method, beside the paper's.

``build_table1`` turns run records (see ``objguided.report.runs``) into a DataFrame, one row per
(dataset, label), seeds averaged; ``write_table1`` writes it as CSV and as readable Markdown.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

import numpy as np
import pandas as pd

from objguided.engine.atomic import write_text
from objguided.errors import DataError
from objguided.report.runs import PAPER_TABLE1_VALUES, as_float, check_metrics, check_speed

#: Value columns (percent for AP, frames per second for fps), in table order.
VALUES = ("ap_dec", "ap_seg", "ap_seg_50", "ap_seg_75", "fps")
#: metrics.json key of each AP column.
METRIC_OF = {"ap_dec": "ap_dec_mean", "ap_seg": "ap_seg_mean", "ap_seg_50": "ap_seg_50", "ap_seg_75": "ap_seg_75"}
#: Markdown header of each value column.
HEADER_OF = {"ap_dec": "APdec", "ap_seg": "APseg", "ap_seg_50": "APseg@0.50", "ap_seg_75": "APseg@0.75", "fps": "FPS"}

ID_COLUMNS = ("dataset", "label", "method", "variant", "paper_dataset", "paper_method", "n_seeds")
COLUMNS = (
    ID_COLUMNS
    + tuple(c for v in VALUES for c in (v, f"{v}_std", f"paper_{v}"))
    + ("in_paper", "device")
)

DECIMALS = 2


def _first_seen(values: Iterable[Any]) -> list:
    return list(dict.fromkeys(values))


def _round(x: float) -> float:
    return round(x, DECIMALS) if math.isfinite(x) else math.nan


def _describe(run: dict) -> str:
    return f"{run.get('dataset')}/{run.get('method')}/{run.get('variant')}/seed{run.get('seed')}"


def _check_run(run: Any, i: int) -> None:
    if not isinstance(run, dict):
        raise DataError(f"run record #{i}: expected a dict, got {type(run).__name__}")
    missing = [k for k in ("dataset", "method", "variant", "seed", "label", "metrics") if k not in run]
    if missing:
        raise DataError(f"run record #{i} ({_describe(run)}): missing key(s) {', '.join(missing)}")
    check_metrics(run["metrics"], f"metrics of run {_describe(run)}")
    if run.get("speed") is not None:
        check_speed(run["speed"], f"speed of run {_describe(run)}")


def _paper_lookup(paper: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, float]]:
    if paper is None:
        return {}
    missing = [c for c in ("dataset", "method") + PAPER_TABLE1_VALUES if c not in paper.columns]
    if missing:
        raise DataError(f"paper table: missing column(s) {', '.join(missing)}")
    lookup: dict[tuple[str, str], dict[str, float]] = {}
    for row in paper.to_dict("records"):
        key = (str(row["dataset"]), str(row["method"]))
        if key in lookup:
            raise DataError(f"paper table: repeated row {key[0]}/{key[1]}")
        lookup[key] = {v: as_float(None if pd.isna(row[v]) else row[v]) for v in PAPER_TABLE1_VALUES}
    return lookup


def _one_value(group: list[dict], key: str, dataset: str, label: str) -> Any:
    values = _first_seen(r.get(key) for r in group)
    if len(values) > 1:
        raise DataError(
            f"runs of {dataset} labelled {label!r} disagree on {key}: {', '.join(map(repr, values))}; "
            "give each (method, variant) its own label"
        )
    return values[0]


def build_table1(runs: list[dict], paper: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (dataset, label): seed mean (and sample std when >1 seed) in percent, beside the paper's.

    AP columns are ``100 *`` the fractions of metrics.json, rounded to 2 decimals; ``fps`` is the mean
    over the seeds that have a speed.json. ``paper_*`` hold the paper's Table I values where the runs'
    ``paper_dataset`` and ``paper_method`` name one of its rows (``in_paper`` is then True), else NaN;
    the paper's empty fps ("more than 1 min per image") is NaN with ``in_paper`` True. ``device`` lists
    the devices the speed was measured on. Rows: datasets in first-seen order, then labels in
    first-seen order.
    """
    for i, run in enumerate(runs):
        _check_run(run, i)
    lookup = _paper_lookup(paper)

    seen: set[tuple] = set()
    for run in runs:
        key = (run["dataset"], run["method"], run["variant"], run["seed"])
        if key in seen:
            raise DataError(f"run {_describe(run)} given twice")
        seen.add(key)

    label_rank = {label: i for i, label in enumerate(_first_seen(r["label"] for r in runs))}
    rows = []
    for dataset in _first_seen(r["dataset"] for r in runs):
        in_dataset = [r for r in runs if r["dataset"] == dataset]
        for label in sorted(_first_seen(r["label"] for r in in_dataset), key=label_rank.__getitem__):
            group = [r for r in in_dataset if r["label"] == label]
            row: dict[str, Any] = {"dataset": dataset, "label": label}
            for key in ("method", "variant", "paper_dataset", "paper_method"):
                row[key] = _one_value(group, key, dataset, label)
            row["n_seeds"] = len(group)
            paper_row = lookup.get((row["paper_dataset"], row["paper_method"]))
            for value in VALUES:
                if value == "fps":
                    per_seed = np.array([as_float(r["speed"]["fps"]) for r in group if r.get("speed")], dtype=float)
                    per_seed = per_seed[np.isfinite(per_seed)]
                else:
                    per_seed = 100.0 * np.array([as_float(r["metrics"][METRIC_OF[value]]) for r in group], dtype=float)
                mean = float(np.mean(per_seed)) if per_seed.size else math.nan
                std = float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else math.nan
                row[value] = _round(mean)
                row[f"{value}_std"] = _round(std)
                row[f"paper_{value}"] = paper_row[value] if paper_row is not None else math.nan
            row["in_paper"] = paper_row is not None
            devices = _first_seen(r["speed"].get("device") for r in group if r.get("speed"))
            devices = [d for d in devices if d]
            row["device"] = "; ".join(devices) if devices else None
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["n_seeds"] = df["n_seeds"].astype(int)
    df["in_paper"] = df["in_paper"].astype(bool)
    return df


def read_table1(path: str | os.PathLike) -> pd.DataFrame:
    """Read back a CSV written by ``write_table1``."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: table not found") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the table: {exc}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


# --- Markdown -----------------------------------------------------------------------------------------


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (not isinstance(x, str) and pd.isna(x))


def _text(x: Any) -> str:
    return "" if _missing(x) else str(x)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt(x: Any) -> str:
    return "n/a" if _missing(x) else f"{float(x):.{DECIMALS}f}"


def _in_paper(row: dict) -> bool:
    flag = row.get("in_paper")
    return not _missing(flag) and bool(flag)


def _cell(row: dict, value: str, device: str | None) -> str:
    """``ours ± std (paper p)``; ``n/a`` for a missing value of ours; nothing about the paper without a row."""
    ours = _fmt(row[value])
    if not _missing(row[f"{value}_std"]):
        ours += f" ± {_fmt(row[f'{value}_std'])}"
    if device and not _missing(row[value]):
        ours += f" [{device}]"
    in_paper = _in_paper(row)
    paper = row[f"paper_{value}"]
    if not _missing(paper):
        ours += f" (paper {_fmt(paper)})"
    elif in_paper and value == "fps":
        ours += " (paper: >1 min/image)"
    return ours


def _markdown_table(header: list[str], align: list[str], body: list[list[str]]) -> list[str]:
    cells = [header] + body
    widths = [max(3, *(len(r[j]) for r in cells)) for j in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if a == "r" else "-" * w for w, a in zip(widths, align)) + " |"
    return [line(header), rule] + [line(r) for r in body]


def table1_markdown(df: pd.DataFrame, note: str | None = None) -> str:
    """The Markdown text ``write_table1`` writes: a title, the optional note, then one table per dataset."""
    out = ["# Table I: instance segmentation AP (%) and speed", ""]
    if note:
        out += [f"> **{line}**" if line.strip() else ">" for line in note.strip().splitlines()] + [""]
    out += [
        "AP in percent over IoU 0.50:0.05:0.95 (APdec: detection by box IoU, APseg: segmentation by mask IoU).",
        "Cells read `ours ± sample std over seeds (paper value)`; the paper's value is shown where the",
        "method stands for a row of the paper's Table I. Paper FPS were measured on one GTX 1080 at 512x512;",
        "ours on the device named in the FPS column.",
        "",
    ]
    if df.empty:
        return "\n".join(out + ["No runs.", ""])
    records = df.to_dict("records")
    for dataset in _first_seen(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset]
        stands_for = _first_seen(_text(r["paper_dataset"]) for r in rows)
        stands_for = [s for s in stands_for if s]
        heading = f"## {dataset}"
        if stands_for:
            heading += f" (stands for the paper's {', '.join(stands_for)})"
        else:
            heading += " (no paper numbers)"
        devices = [d for d in _first_seen(_text(r["device"]) for r in rows) if d]
        shared = devices[0] if len(devices) == 1 else None
        fps_header = "FPS"
        if shared:
            fps_header += f" [{shared}]"
        header = ["Method", "Paper row", "Seeds"] + [HEADER_OF[v] for v in VALUES[:-1]] + [fps_header]
        align = ["l", "l", "r"] + ["r"] * len(VALUES)
        body = []
        for r in rows:
            paper_row = _text(r["paper_method"])
            if paper_row and not _in_paper(r):
                paper_row += " (not in the paper's table)"
            cells = [_escape(_text(r["label"])), _escape(paper_row or "-"), str(int(r["n_seeds"]))]
            cells += [_cell(r, v, None) for v in VALUES[:-1]]
            cells.append(_cell(r, "fps", None if shared else (_text(r["device"]) or None)))
            body.append(cells)
        out += [heading, ""] + _markdown_table(header, align, body) + [""]
    return "\n".join(out)


def write_table1(
    df: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike, note: str | None = None
) -> None:
    """Write ``df`` (from ``build_table1``) as CSV and as Markdown, both atomically."""
    write_text(csv_path, df.to_csv(index=False, lineterminator="\n"))
    write_text(md_path, table1_markdown(df, note))
