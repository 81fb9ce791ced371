"""Table I: APdec, APseg, APseg@0.50, APseg@0.75 (percent) and FPS per dataset and method, beside the paper's.

``build_table1`` turns run records (see ``objguided.report.runs``) into a DataFrame, one row per
(dataset, label), seeds averaged, with a 95% percentile-bootstrap interval over the test images for each
AP column (``objguided.report.bootstrap``; empty for runs scored before metrics.json held the
per-prediction match data). ``write_table1`` writes it as CSV, readable Markdown and an HTML table.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from objguided.engine.atomic import write_text
from objguided.errors import DataError
from objguided.report import bootstrap as bs
from objguided.report.markup import esc, html_document, html_table, is_missing, markdown_table, text
from objguided.report.runs import PAPER_TABLE1_VALUES, as_float, check_metrics, check_speed, describe_run, first_seen

#: Value columns (percent for AP, frames per second for fps), in table order.
VALUES = ("ap_dec", "ap_seg", "ap_seg_50", "ap_seg_75", "fps")
#: metrics.json key of each AP column.
METRIC_OF = {"ap_dec": "ap_dec_mean", "ap_seg": "ap_seg_mean", "ap_seg_50": "ap_seg_50", "ap_seg_75": "ap_seg_75"}
#: Markdown header of each value column.
HEADER_OF = {"ap_dec": "APdec", "ap_seg": "APseg", "ap_seg_50": "APseg@0.50", "ap_seg_75": "APseg@0.75", "fps": "FPS"}

#: AP columns that get a bootstrap interval (``{v}_ci_low``, ``{v}_ci_high``).
CI_VALUES = VALUES[:-1]

ID_COLUMNS = ("dataset", "label", "method", "variant", "paper_dataset", "paper_method", "n_seeds")
COLUMNS = (
    ID_COLUMNS
    + tuple(c for v in VALUES for c in (v, f"{v}_std", f"paper_{v}"))
    + ("in_paper", "device")
    + tuple(c for v in CI_VALUES for c in (f"{v}_ci_low", f"{v}_ci_high"))
    + ("ci_images",)
)

#: The bootstrap settings used unless the report spec says otherwise (see objguided.report.bootstrap).
BOOTSTRAP = {"resamples": bs.DEFAULT_RESAMPLES, "seed": bs.DEFAULT_SEED, "level": bs.DEFAULT_LEVEL}

DECIMALS = 2


def _round(x: float) -> float:
    return round(x, DECIMALS) if math.isfinite(x) else math.nan


def _check_run(run: Any, i: int) -> None:
    if not isinstance(run, dict):
        raise DataError(f"run record #{i}: expected a dict, got {type(run).__name__}")
    missing = [k for k in ("dataset", "method", "variant", "seed", "label", "metrics") if k not in run]
    if missing:
        raise DataError(f"run record #{i} ({describe_run(run)}): missing key(s) {', '.join(missing)}")
    check_metrics(run["metrics"], f"metrics of run {describe_run(run)}")
    if run.get("speed") is not None:
        check_speed(run["speed"], f"speed of run {describe_run(run)}")


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
    values = first_seen(r.get(key) for r in group)
    if len(values) > 1:
        raise DataError(
            f"runs of {dataset} labelled {label!r} disagree on {key}: {', '.join(map(repr, values))}; "
            "give each (method, variant) its own label"
        )
    return values[0]


def row_intervals(group: list[dict], bootstrap: dict | None) -> tuple[dict[str, tuple[float, float]], int]:
    """Bootstrap intervals (percent, rounded) of one row's AP columns and its number of test images.

    Empty (and 0 images) when ``bootstrap`` is None or any seed lacks the per-prediction match data.
    """
    if bootstrap is None:
        return {}, 0
    matches = [bs.matches_of(r["metrics"]) for r in group]
    if not matches or any(m is None for m in matches):
        return {}, 0
    ci = bs.intervals(matches, int(bootstrap["resamples"]), int(bootstrap["seed"]), float(bootstrap["level"]))
    return {k: (_round(lo), _round(hi)) for k, (lo, hi) in ci.items()}, len(matches[0].image_ids)


def build_table1(runs: list[dict], paper: pd.DataFrame | None, bootstrap: dict | None = BOOTSTRAP) -> pd.DataFrame:
    """One row per (dataset, label): seed mean (and sample std when >1 seed) in percent, beside the paper's.

    AP columns are ``100 *`` the fractions of metrics.json, rounded to 2 decimals; ``fps`` is the mean
    over the seeds that have a speed.json. ``paper_*`` hold the paper's Table I values where the runs'
    ``paper_dataset`` and ``paper_method`` name one of its rows (``in_paper`` is then True), else NaN;
    the paper's empty fps ("more than 1 min per image") is NaN with ``in_paper`` True. ``device`` lists
    the devices the speed was measured on. ``{v}_ci_low``/``{v}_ci_high``: the percentile bootstrap
    interval over test images (``bootstrap`` settings; None: no intervals), NaN where a seed lacks the
    match data; ``ci_images``: test images resampled (0: no interval). Rows: datasets in first-seen
    order, then a leaderboard: APseg from best to worst (rows without one last), ties in first-seen order.
    """
    for i, run in enumerate(runs):
        _check_run(run, i)
    lookup = _paper_lookup(paper)

    seen: set[tuple] = set()
    for run in runs:
        key = (run["dataset"], run["method"], run["variant"], run["seed"])
        if key in seen:
            raise DataError(f"run {describe_run(run)} given twice")
        seen.add(key)

    label_rank = {label: i for i, label in enumerate(first_seen(r["label"] for r in runs))}
    rows = []
    for dataset in first_seen(r["dataset"] for r in runs):
        in_dataset = [r for r in runs if r["dataset"] == dataset]
        for label in sorted(first_seen(r["label"] for r in in_dataset), key=label_rank.__getitem__):
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
            devices = first_seen(r["speed"].get("device") for r in group if r.get("speed"))
            devices = [d for d in devices if d]
            row["device"] = "; ".join(devices) if devices else None
            ci, row["ci_images"] = row_intervals(group, bootstrap)
            for value in CI_VALUES:
                row[f"{value}_ci_low"], row[f"{value}_ci_high"] = ci.get(value, (math.nan, math.nan))
            rows.append(row)
    df = leaderboard_order(pd.DataFrame(rows, columns=list(COLUMNS)))
    df["n_seeds"] = df["n_seeds"].astype(int)
    df["in_paper"] = df["in_paper"].astype(bool)
    df["ci_images"] = df["ci_images"].astype(int)
    return df


def leaderboard_order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each dataset (datasets kept in order) by APseg, best first, missing last; ties keep their order.

    >>> df = pd.DataFrame({"dataset": ["a", "a", "b", "a"], "ap_seg": [1.0, None, 5.0, 3.0]})
    >>> leaderboard_order(df).ap_seg.tolist()
    [3.0, 1.0, nan, 5.0]
    """
    rank = {d: i for i, d in enumerate(first_seen(df["dataset"]))}
    key = pd.DataFrame({"d": df["dataset"].map(rank), "ap": -df["ap_seg"].astype(float).fillna(-np.inf)})
    return df.loc[key.sort_values(["d", "ap"], kind="stable").index].reset_index(drop=True)


def best_values(rows: list[dict]) -> dict[str, float]:
    """Per value column, the best (highest) of ``rows``; NaN where none has one."""
    best = {}
    for v in VALUES:
        vals = [float(r[v]) for r in rows if not is_missing(r[v])]
        best[v] = max(vals) if vals else math.nan
    return best


def read_table1(path: str | os.PathLike) -> pd.DataFrame:
    """Read back a CSV written by ``write_table1``."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: table not found") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the table: {exc}") from None
    # tables written before the bootstrap intervals existed read back with empty intervals
    optional = [c for c in COLUMNS if "_ci_" in c or c == "ci_images"]
    missing = [c for c in COLUMNS if c not in df.columns and c not in optional]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    for c in optional:
        if c not in df.columns:
            df[c] = 0 if c == "ci_images" else math.nan
    return df.loc[:, list(COLUMNS)]


# --- Markdown and HTML ---------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt(x: Any) -> str:
    return "n/a" if is_missing(x) else f"{float(x):.{DECIMALS}f}"


def _in_paper(row: dict) -> bool:
    flag = row.get("in_paper")
    return not is_missing(flag) and bool(flag)


def _cell_parts(row: dict, value: str, device: str | None) -> tuple[str, str, str]:
    """(``ours ± std [device]``, ``[lo, hi]`` or "", ``paper p`` or ""): one cell's three pieces."""
    ours = _fmt(row[value])
    if row.get(f"{value}_best"):
        ours = f"**{ours}**"
    if not is_missing(row[f"{value}_std"]):
        ours += f" ± {_fmt(row[f'{value}_std'])}"
    if device and not is_missing(row[value]):
        ours += f" [{device}]"
    ci = ""
    low, high = row.get(f"{value}_ci_low"), row.get(f"{value}_ci_high")
    if not is_missing(low) and not is_missing(high):
        ci = f"[{_fmt(low)}, {_fmt(high)}]"
    paper = row[f"paper_{value}"]
    if not is_missing(paper):
        paper_text = f"paper {_fmt(paper)}"
    elif _in_paper(row) and value == "fps":
        paper_text = "paper: >1 min/image"
    else:
        paper_text = ""
    return ours, ci, paper_text


def _cell(row: dict, value: str, device: str | None) -> str:
    """``ours ± std [lo, hi] (paper p)``; ``n/a`` for a missing value of ours; nothing about the paper without a row."""
    ours, ci, paper = _cell_parts(row, value, device)
    return ours + (f" {ci}" if ci else "") + (f" ({paper})" if paper else "")


def _html_cell(row: dict, value: str, device: str | None) -> str:
    ours, ci, paper = _cell_parts(row, value, device)
    out = esc(ours)
    if row.get(f"{value}_best"):
        out = "<b>" + out.replace("**", "", 2) + "</b>"
    if ci:
        out += f'<span class="ci">95% CI {esc(ci)}</span>'
    if paper:
        out += f'<span class="paper">{esc(paper)}</span>'
    return out


def bootstrap_sentence(df: pd.DataFrame, bootstrap: dict | None = BOOTSTRAP) -> str:
    """What the intervals are, and which rows have none (scored before the match data was stored)."""
    if bootstrap is None:
        return "No bootstrap intervals (disabled)."
    level = int(round(100 * float(bootstrap["level"])))
    sentence = (f"[lo, hi]: {level}% percentile bootstrap interval over the test images ({bootstrap['resamples']} "
            f"resamples of the images with replacement, generator seed {bootstrap['seed']}; the same resamples "
            "for every seed of a row, whose AP is averaged per resample).")
    if "ci_images" in df.columns and len(df):
        lacking = [f"{d}/{lab}" for d, lab, n in zip(df["dataset"], df["label"], df["ci_images"])
                   if is_missing(n) or int(n) == 0]
        why = ("metrics.json holds no per-prediction match data (scored by an older version of `objguided "
               "score`; re-run the score step to get intervals).")
        if len(lacking) == len(df):
            sentence += " No interval for any row: their " + why
        elif lacking:
            sentence += " No interval for " + ", ".join(lacking) + ": their " + why
    return sentence


def _dataset_blocks(df: pd.DataFrame, cell) -> list[tuple[str, list[str], list[str], list[list[str]]]]:
    """Per dataset: (heading, header, align, body) with cells made by ``cell(row, value, device)``."""
    records = df.to_dict("records")
    blocks = []
    for dataset in first_seen(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset]
        stands_for = first_seen(text(r["paper_dataset"]) for r in rows)
        stands_for = [s for s in stands_for if s]
        heading = f"{dataset}"
        if stands_for:
            heading += f" (stands for the paper's {', '.join(stands_for)})"
        else:
            heading += " (no paper numbers)"
        devices = [d for d in first_seen(text(r["device"]) for r in rows) if d]
        shared = devices[0] if len(devices) == 1 else None
        fps_header = "FPS"
        if shared:
            fps_header += f" [{shared}]"
        header = ["Method", "Paper row", "Seeds"] + [HEADER_OF[v] for v in VALUES[:-1]] + [fps_header]
        align = ["l", "l", "r"] + ["r"] * len(VALUES)
        body = []
        best = best_values(rows)
        for r in rows:
            r = r | {f"{v}_best": len(rows) > 1 and r[v] == best[v] for v in VALUES}
            paper_row = text(r["paper_method"])
            if paper_row and not _in_paper(r):
                paper_row += " (not in the paper's table)"
            cells = [text(r["label"]), paper_row or "-", str(int(r["n_seeds"]))]
            cells += [cell(r, v, None) for v in VALUES[:-1]]
            cells.append(cell(r, "fps", None if shared else (text(r["device"]) or None)))
            body.append(cells)
        blocks.append((heading, header, align, body))
    return blocks


_INTRO = (
    "AP in percent over IoU 0.50:0.05:0.95 (APdec: detection by box IoU, APseg: segmentation by mask IoU).",
    "Rows: best APseg first. The best value of each column is in bold.",
    "Cells read `ours ± sample std over seeds [bootstrap interval] (paper value)`; the paper's value is shown",
    "where the method stands for a row of the paper's Table I. Paper FPS were measured on one GTX 1080 at",
    "512x512; ours on the device named in the FPS column.",
)


def table1_markdown(df: pd.DataFrame, note: str | None = None, bootstrap: dict | None = BOOTSTRAP) -> str:
    """The Markdown text ``write_table1`` writes: a title, the optional note, then one table per dataset."""
    out = ["# Table I: instance segmentation AP (%) and speed", ""]
    if note:
        out += [f"> **{line}**" if line.strip() else ">" for line in note.strip().splitlines()] + [""]
    out += list(_INTRO) + ["", bootstrap_sentence(df, bootstrap), ""]
    if df.empty:
        return "\n".join(out + ["No runs.", ""])
    for heading, header, align, body in _dataset_blocks(df, _cell):
        body = [[_escape(c) if j < 2 else c for j, c in enumerate(row)] for row in body]
        out += [f"## {heading}", ""] + markdown_table(header, align, body) + [""]
    return "\n".join(out)


def table1_html(df: pd.DataFrame, bootstrap: dict | None = BOOTSTRAP, level: int = 3) -> str:
    """Table I as HTML (one table per dataset under an ``<h{level}>``), for report.html and table1.html."""
    out = [f'<p class="muted">{esc(" ".join(_INTRO).replace("`", ""))}</p>',
           f'<p class="muted">{esc(bootstrap_sentence(df, bootstrap))}</p>']
    if df.empty:
        return "\n".join(out + ["<p>No runs.</p>"])
    for heading, header, align, body in _dataset_blocks(df, _html_cell):
        body = [[esc(c) if j < 3 else c for j, c in enumerate(row)] for row in body]
        out += [f"<h{level}>{esc(heading)}</h{level}>", html_table(header, align, body)]
    return "\n".join(out)


def table1_latex(df: pd.DataFrame) -> str:
    """Table I as LaTeX (pandas' Styler, booktabs rules): one tabular per dataset, ``ours ± std (paper)`` cells,
    the best value of each column in bold. Needs ``\\usepackage{booktabs}``."""
    out = ["% Table I: instance segmentation AP (%) and speed; written by objguided report (table1.csv holds the numbers)"]
    for dataset in first_seen(df["dataset"]):
        rows = df[df["dataset"] == dataset]
        records = rows.to_dict("records")
        best = best_values(records)
        cells = pd.DataFrame({"Method": rows["label"].astype(str).tolist()}
                             | {HEADER_OF[v]: [_latex_cell(r, v) for r in records] for v in VALUES})
        bold = pd.DataFrame({"Method": [False] * len(records)}
                            | {HEADER_OF[v]: [len(records) > 1 and r[v] == best[v] for r in records] for v in VALUES})
        styler = cells.style.hide(axis="index").format(escape="latex")
        styler = styler.apply(lambda col: np.where(bold[col.name], "textbf:--rwrap;", ""), axis=0)
        out += [f"% {dataset}", styler.to_latex(hrules=True, column_format="l" + "r" * len(VALUES),
                                                caption=f"{dataset}", position="h")]
    return "\n".join(out)


def _latex_cell(row: dict, value: str) -> str:
    ours = _fmt(row[value])
    if not is_missing(row[f"{value}_std"]):
        ours += f" ± {_fmt(row[f'{value}_std'])}"
    paper = row[f"paper_{value}"]
    return ours + ("" if is_missing(paper) else f" ({_fmt(paper)})")


def write_table1(
    df: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike, note: str | None = None,
    html_path: str | os.PathLike | None = None, bootstrap: dict | None = BOOTSTRAP,
    tex_path: str | os.PathLike | None = None,
) -> None:
    """Write ``df`` (from ``build_table1``) as CSV, Markdown and (with ``html_path`` / ``tex_path``) HTML and
    LaTeX, all atomically."""
    write_text(csv_path, df.to_csv(index=False, lineterminator="\n"))
    write_text(md_path, table1_markdown(df, note, bootstrap))
    if tex_path is not None:
        write_text(tex_path, table1_latex(df))
    if html_path is not None:
        body = "<h1>Table I: instance segmentation AP (%) and speed</h1>\n"
        if note:
            body += f'<p class="note">{esc(note)}</p>\n'
        write_text(html_path, html_document("Table I", body + table1_html(df, bootstrap, level=2)))
