"""Table II: the sampling-strategy ablation of the refinement module (APseg, percent), ours beside the paper's.

Every dataset of the report gets the paper's nine rows (``paper/table2.csv``: "w.o. sampling" and
eight (k, beta) strategies). A run of method ``objguided`` fills the row its variant's parameters name:

- ``refine: false`` -> "w.o. sampling";
- otherwise its (k, beta) (the method's defaults, k 3 and beta 0.75, where the variant sets neither) ->
  the strategy row with that (k, beta);
- a variant that follows the authors' code path (``faithful_to`` other than "paper") is left out: it
  changes more than the sampling (and is scored with another mask IoU), so it is no row of this ablation.

A row no run fills stays in the table with ours empty ("no run"): never invented. Seeds are averaged
(sample std over seeds) and the APseg bootstrap interval is the one of Table I (``bootstrap``). Two
variants on the same row (e.g. two labels with the same k and beta) give two rows, each named.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from objguided.engine.atomic import write_text
from objguided.report.markup import esc, html_document, html_table, is_missing, markdown_table, text
from objguided.report.runs import as_float, read_paper_csv
from objguided.report.table1 import BOOTSTRAP, row_intervals

METHOD = "objguided"
NO_SAMPLING = "w.o. sampling"
#: The method's defaults for the refinement sampling (methods/objguided.py, Config).
DEFAULT_K, DEFAULT_BETA = 3.0, 0.75
COLUMNS = ("dataset", "paper_dataset", "strategy", "k", "beta", "label", "variant", "n_seeds",
           "ap_seg", "ap_seg_std", "ap_seg_ci_low", "ap_seg_ci_high", "paper_ap_seg")


def read_paper_table2(path: str | os.PathLike) -> pd.DataFrame:
    """The paper's Table II: dataset, strategy, k, beta (NaN for "w.o. sampling"), ap_seg (percent)."""
    return read_paper_csv(path, ("dataset", "strategy"), ("k", "beta", "ap_seg"))


def strategies(paper: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(strategy, k, beta) in the paper's row order (first dataset's order), k and beta NaN for no sampling."""
    out: dict[str, tuple[str, float, float]] = {}
    for row in paper.to_dict("records"):
        out.setdefault(row["strategy"], (row["strategy"], float(row["k"]), float(row["beta"])))
    return list(out.values())


def strategy_of(params: dict | None, rows: list[tuple[str, float, float]]) -> str | None:
    """The Table II row a variant's parameters name, or None (not an ablation row, or no such strategy).

    >>> rows = [("w.o. sampling", math.nan, math.nan), ("uniform", 3.0, 3.0), ("moderately biased", 3.0, 0.75)]
    >>> strategy_of({}, rows), strategy_of({"refine": False}, rows), strategy_of({"k": 3, "beta": 3}, rows)
    ('moderately biased', 'w.o. sampling', 'uniform')
    >>> strategy_of({"k": 7.0}, rows) is None, strategy_of({"faithful_to": "code"}, rows) is None
    (True, True)
    """
    params = params or {}
    if params.get("faithful_to", "paper") != "paper":
        return None
    if params.get("refine", True) is False:
        return NO_SAMPLING
    k, beta = float(params.get("k", DEFAULT_K)), float(params.get("beta", DEFAULT_BETA))
    for name, rk, rb in rows:
        if math.isclose(rk, k, abs_tol=1e-9) and math.isclose(rb, beta, abs_tol=1e-9):
            return name
    return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.array(values, dtype=float)
    mean = round(float(np.mean(arr)), 2) if arr.size else math.nan
    std = round(float(np.std(arr, ddof=1)), 2) if arr.size > 1 else math.nan
    return mean, std


def build_table2(runs: list[dict], paper: pd.DataFrame, bootstrap: dict | None = BOOTSTRAP) -> pd.DataFrame:
    """One row per (dataset, strategy[, variant]), datasets in first-seen order, strategies in the paper's.

    ``runs`` are run records (all methods; only ``objguided`` ones are used) that carry ``params`` (the
    variant's merged parameters). Datasets are every dataset of ``runs``; the paper's value is joined on
    the run's ``paper_dataset``.
    """
    rows_spec = strategies(paper)
    paper_value = {(r["dataset"], r["strategy"]): float(r["ap_seg"]) for r in paper.to_dict("records")}
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    out: list[dict[str, Any]] = []
    for dataset in datasets:
        in_dataset = [r for r in runs if r["dataset"] == dataset]
        paper_datasets = [p for p in dict.fromkeys(r.get("paper_dataset") for r in in_dataset) if p]
        paper_dataset = paper_datasets[0] if len(paper_datasets) == 1 else None
        ours = [r for r in in_dataset if r["method"] == METHOD]
        for name, k, beta in rows_spec:
            members = [r for r in ours if strategy_of(r.get("params"), rows_spec) == name]
            base = {"dataset": dataset, "paper_dataset": paper_dataset, "strategy": name, "k": k, "beta": beta,
                    "paper_ap_seg": paper_value.get((paper_dataset, name), math.nan)}
            variants = list(dict.fromkeys(r["variant"] for r in members))
            if not variants:
                out.append(base | {"label": None, "variant": None, "n_seeds": 0, "ap_seg": math.nan,
                                   "ap_seg_std": math.nan, "ap_seg_ci_low": math.nan, "ap_seg_ci_high": math.nan})
                continue
            for variant in variants:
                group = [r for r in members if r["variant"] == variant]
                mean, std = _mean_std([100.0 * as_float(r["metrics"]["ap_seg_mean"]) for r in group])
                ci, _ = row_intervals(group, bootstrap)
                low, high = ci.get("ap_seg", (math.nan, math.nan))
                out.append(base | {"label": group[0]["label"], "variant": variant, "n_seeds": len(group),
                                   "ap_seg": mean, "ap_seg_std": std, "ap_seg_ci_low": low, "ap_seg_ci_high": high})
    df = pd.DataFrame(out, columns=list(COLUMNS))
    df["n_seeds"] = df["n_seeds"].astype(int)
    return df


def _f(x: Any) -> str:
    return "" if is_missing(x) else f"{float(x):g}" if abs(float(x) - round(float(x))) > 1e-9 else f"{float(x):.0f}"


def _paper(row: dict) -> str:
    return "" if is_missing(row["paper_ap_seg"]) else f"{row['paper_ap_seg']:.2f}"


def _ours(row: dict) -> tuple[str, str]:
    if row["n_seeds"] == 0:
        return "no run", ""
    ours = "n/a" if is_missing(row["ap_seg"]) else f"{row['ap_seg']:.2f}"
    if not is_missing(row["ap_seg_std"]):
        ours += f" ± {row['ap_seg_std']:.2f}"
    ci = "" if is_missing(row["ap_seg_ci_low"]) else f"[{row['ap_seg_ci_low']:.2f}, {row['ap_seg_ci_high']:.2f}]"
    return ours, ci


def _blocks(df: pd.DataFrame):
    records = df.to_dict("records")
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        rows = [r for r in records if r["dataset"] == dataset]
        pd_name = rows[0]["paper_dataset"]
        heading = dataset + (f" (paper: {pd_name})" if not is_missing(pd_name) and pd_name else " (no paper numbers)")
        yield heading, rows


HEADER = ["Strategy", "k", "beta", "Variant", "Seeds", "APseg ours", "APseg paper"]
ALIGN = ["l", "r", "r", "l", "r", "r", "r"]
INTRO = ("APseg (%) of the paper's method with each sampling strategy of the refinement module (k*N random "
         "points, the beta*N most uncertain kept). Ours: mean ± sample std over seeds [95% bootstrap interval "
         "over test images]; 'no run': the config has no variant with these parameters.")


def table2_markdown(df: pd.DataFrame, note: str | None = None) -> str:
    out = ["# Table II: sampling strategies of the refinement module (APseg, %)", ""]
    if note:
        out += [f"> **{line}**" if line.strip() else ">" for line in note.strip().splitlines()] + [""]
    out += [INTRO, ""]
    if df.empty:
        return "\n".join(out + ["No runs.", ""])
    for heading, rows in _blocks(df):
        body = []
        for r in rows:
            ours, ci = _ours(r)
            body.append([r["strategy"], _f(r["k"]) or "-", _f(r["beta"]) or "-",
                         (text(r["label"]) or "-").replace("|", "\\|"), str(r["n_seeds"]),
                         ours + (f" {ci}" if ci else ""), _paper(r)])
        out += [f"## {heading}", ""] + markdown_table(HEADER, ALIGN, body) + [""]
    return "\n".join(out)


def table2_html(df: pd.DataFrame, level: int = 3) -> str:
    out = [f'<p class="muted">{esc(INTRO)}</p>']
    if df.empty:
        return "\n".join(out + ["<p>No runs.</p>"])
    for heading, rows in _blocks(df):
        body, classes = [], []
        for r in rows:
            ours, ci = _ours(r)
            cell = esc(ours) + (f'<span class="ci">95% CI {esc(ci)}</span>' if ci else "")
            body.append([esc(r["strategy"]), esc(_f(r["k"]) or "-"), esc(_f(r["beta"]) or "-"),
                         esc(text(r["label"]) or "-"), str(r["n_seeds"]), cell, esc(_paper(r))])
            classes.append("missing" if r["n_seeds"] == 0 else "")
        out += [f"<h{level}>{esc(heading)}</h{level}>", html_table(HEADER, ALIGN, body, classes)]
    return "\n".join(out)


def write_table2(df: pd.DataFrame, csv_path, md_path, html_path=None, note: str | None = None) -> None:
    """Write ``df`` (from ``build_table2``) as CSV, Markdown and (with ``html_path``) HTML, atomically."""
    write_text(csv_path, df.to_csv(index=False, lineterminator="\n"))
    write_text(md_path, table2_markdown(df, note))
    if html_path is not None:
        body = "<h1>Table II: sampling strategies of the refinement module (APseg, %)</h1>\n"
        if note:
            body += f'<p class="note">{esc(note)}</p>\n'
        write_text(html_path, html_document("Table II", body + table2_html(df, level=2)))
