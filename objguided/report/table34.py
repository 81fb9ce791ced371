"""Tables III and IV: the Cell Tracking Challenge (SEG, DET, OP_CSB) and CVPPP Leaf Segmentation Challenge
(bestDice, absDiffFG, diffFG, FgBgDice) measures of our runs, beside the paper's.

The measures come from :func:`objguided.metrics.quality.quality_from_predictions`, stored in a run record
(see :mod:`objguided.report.runs`) as ``run["metrics"]["quality"]`` = ``{"ctc": {...}, "cvppp": {...},
"images": n, "groups": {...}}``.

Which runs go where (by the run record's ``paper_dataset``):

- Table III: ``paper_dataset`` equal to a ``dataset`` of ``table3.csv`` (``Fluo-N2DL-HeLa``,
  ``PhC-C2DH-U373``, ``PhC-C2DL-PSC``); the row gets the run's pooled ``quality["ctc"]``.
- Table IV: ``paper_dataset`` equal to a subset row of ``table4.csv`` (``A1`` .. ``A5``): that row gets
  the run's ``quality["cvppp"]``. Or ``paper_dataset`` one of :data:`LSC_COMBINED` (``lsc``, ``cvppp``...): a
  run over several subsets (as the paper's one model on A1-A4), whose ``quality["groups"]`` (image ids
  ``A1_plant001``...) fill the subset rows and whose overall ``quality["cvppp"]`` (the mean over all its
  images) fills the ``mean`` row; a run with no ``paper_dataset`` whose image ids group only as ``A1``..``A5``
  counts as such a run. The paper's ``mean`` row is not the plain mean of its subset rows; it
  matches their mean weighted by the challenge's test image counts, i.e. the mean over all test images.

Each paper row lists every (our dataset, label) standing for it, seeds averaged (sample std over seeds when
there are several); a paper row without any run says so. A run that stands for a row but whose metrics hold
no ``quality`` is listed as not scored. :func:`write_tables34` writes ``table3.csv``/``.md`` and
``table4.csv``/``.md`` for the tables that have at least one run, and nothing when no run qualifies.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from objguided.engine.atomic import write_text
from objguided.errors import DataError
from objguided.report.markup import is_missing, markdown_table, text
from objguided.report.runs import describe_run, first_seen, read_paper_csv

#: Measures of each table (keys of quality["ctc"] / quality["cvppp"] and columns of the paper's CSVs).
TABLE3_VALUES = ("op_csb", "seg", "det")
TABLE4_VALUES = ("best_dice", "abs_diff_fg", "diff_fg", "fg_bg_dice")
HEADER_OF = {"op_csb": "OP_CSB", "seg": "SEG", "det": "DET", "best_dice": "bestDice", "abs_diff_fg": "absDiffFG",
             "diff_fg": "diffFG", "fg_bg_dice": "FgBgDice"}
#: ``paper_dataset`` values of a run over several LSC subsets (case-insensitive).
LSC_COMBINED = frozenset({"lsc", "cvppp", "cvppp2017", "lsc2017", "cvppp-lsc"})
#: The LSC subsets, the image-id prefixes of the ``lsc`` source (A1_plant001).
LSC_SUBSETS = frozenset({"A1", "A2", "A3", "A4", "A5"})
#: The paper's Table IV row of the mean over all images.
MEAN_ROW = "mean"

ID_COLUMNS = ("paper_dataset", "dataset", "label", "method", "variant", "n_seeds", "n_scored", "images")
TABLE3_COLUMNS = (ID_COLUMNS + tuple(c for v in TABLE3_VALUES for c in (v, f"{v}_std", f"paper_{v}", f"paper_{v}_top"))
                  + ("has_run",))
TABLE4_COLUMNS = ID_COLUMNS + tuple(c for v in TABLE4_VALUES for c in (v, f"{v}_std", f"paper_{v}")) + ("has_run",)

CSV_DECIMALS = 4
MD_DECIMALS = {"table3": 3, "table4": 2}  # as printed in the paper


# --------------------------------------------------------------------------------------- paper tables

def read_paper_table3(path: str | os.PathLike) -> pd.DataFrame:
    """The paper's Table III: dataset, op_csb, op_csb_top, seg, seg_top, det, det_top (fractions)."""
    return read_paper_csv(path, ("dataset",), tuple(c for v in TABLE3_VALUES for c in (v, f"{v}_top")))


def read_paper_table4(path: str | os.PathLike) -> pd.DataFrame:
    """The paper's Table IV: dataset (A1..A5, mean), best_dice, abs_diff_fg, diff_fg, fg_bg_dice."""
    return read_paper_csv(path, ("dataset",), tuple(TABLE4_VALUES))


# -------------------------------------------------------------------------------------------- entries

def _check_runs(runs: list) -> None:
    seen: set = set()
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise DataError(f"run record #{i}: expected a dict, got {type(run).__name__}")
        missing = [k for k in ("dataset", "method", "variant", "seed", "label", "metrics") if k not in run]
        if missing:
            raise DataError(f"run record #{i} ({describe_run(run)}): missing key(s) {', '.join(missing)}")
        if not isinstance(run["metrics"], dict):
            raise DataError(f"metrics of run {describe_run(run)}: expected a dict")
        key = (run["dataset"], run["method"], run["variant"], run["seed"])
        if key in seen:
            raise DataError(f"run {describe_run(run)} given twice")
        seen.add(key)


def _quality(run: dict) -> dict | None:
    q = run["metrics"].get("quality")
    if q is None:
        return None
    if not isinstance(q, dict):
        raise DataError(f"metrics of run {describe_run(run)}: 'quality' must be a dict, got {type(q).__name__}")
    return q


def _measures(part: Any, keys: tuple[str, ...], where: str) -> dict[str, float]:
    if not isinstance(part, dict):
        raise DataError(f"{where}: expected a dict of measures, got {type(part).__name__}")
    out = {}
    for k in keys:
        if k not in part:
            raise DataError(f"{where}: missing key {k!r}")
        v = part[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise DataError(f"{where}: {k!r} must be a number or null, got {v!r}")
        out[k] = math.nan if v is None else float(v)
    return out


def _images(part: Any) -> float:
    n = part.get("images") if isinstance(part, dict) else None
    return float(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else math.nan


def table3_entries(runs: list[dict], paper_rows: Iterable[str]) -> list[tuple[str, dict, dict | None, float]]:
    """(paper row, run, CTC measures or None when the run holds no quality measures, images) per run
    standing for a Table III row."""
    rows = set(paper_rows)
    out = []
    for run in runs:
        row = run.get("paper_dataset")
        if row not in rows:
            continue
        q = _quality(run)
        if q is None:
            out.append((row, run, None, math.nan))
            continue
        where = f"quality of run {describe_run(run)}"
        ctc = q.get("ctc")
        out.append((row, run, _measures(ctc, TABLE3_VALUES, f"{where}: 'ctc'"),
                    _images(ctc) if not math.isnan(_images(ctc)) else _images(q)))
    return out


def _lsc_by_ids(run: dict) -> bool:
    """A run with no ``paper_dataset`` whose image ids group only as LSC subsets (``A1_plant001`` ...): an LSC
    set, so Table IV appears without a key the user has to know (datasets/lsc.yaml)."""
    q = (run.get("metrics") or {}).get("quality") if run.get("paper_dataset") is None else None
    groups = q.get("groups") if isinstance(q, dict) else None
    return isinstance(groups, dict) and bool(groups) and set(groups) <= LSC_SUBSETS


def table4_entries(runs: list[dict], paper_rows: Iterable[str]) -> list[tuple[str, dict, dict | None, float]]:
    """(paper row, run, CVPPP measures or None, images) per (run, Table IV row) it fills (module docstring)."""
    subsets = [r for r in paper_rows if r != MEAN_ROW]
    out = []
    for run in runs:
        pd_name = run.get("paper_dataset")
        combined = isinstance(pd_name, str) and pd_name.lower() in LSC_COMBINED or _lsc_by_ids(run)
        if pd_name not in subsets and not combined:
            continue
        q = _quality(run)
        own_row = MEAN_ROW if combined else pd_name
        if q is None:
            out.append((own_row, run, None, math.nan))
            continue
        where = f"quality of run {describe_run(run)}"
        if combined:
            groups = q.get("groups") or {}
            if not isinstance(groups, dict):
                raise DataError(f"{where}: 'groups' must be a dict")
            for name in subsets:
                if name in groups:
                    g = groups[name]
                    cv = g.get("cvppp") if isinstance(g, dict) else None
                    out.append((name, run, _measures(cv, TABLE4_VALUES, f"{where}: groups/{name}/cvppp"),
                                _images(g)))
        cv = q.get("cvppp")
        out.append((own_row, run, _measures(cv, TABLE4_VALUES, f"{where}: 'cvppp'"),
                    _images(cv) if not math.isnan(_images(cv)) else _images(q)))
    return out


# ---------------------------------------------------------------------------------------------- build

def _round(x: float) -> float:
    return round(x, CSV_DECIMALS) if math.isfinite(x) else math.nan


def _build(entries: list, paper: pd.DataFrame, values: tuple[str, ...], top: bool, columns: tuple) -> pd.DataFrame:
    lookup = {str(r["dataset"]): r for r in paper.to_dict("records")}
    rows = []
    for paper_row in paper["dataset"]:
        mine = [e for e in entries if e[0] == paper_row]
        ref = lookup[paper_row]
        paper_cells = {}
        for v in values:
            paper_cells[f"paper_{v}"] = float(ref[v])
            if top:
                paper_cells[f"paper_{v}_top"] = float(ref[f"{v}_top"])
        if not mine:
            rows.append({"paper_dataset": paper_row, "dataset": None, "label": None, "method": None,
                         "variant": None, "n_seeds": 0, "n_scored": 0, "images": None,
                         **{v: math.nan for v in values}, **{f"{v}_std": math.nan for v in values},
                         **paper_cells, "has_run": False})
            continue
        for dataset, label in first_seen((e[1]["dataset"], e[1]["label"]) for e in mine):
            group = [e for e in mine if (e[1]["dataset"], e[1]["label"]) == (dataset, label)]
            row: dict[str, Any] = {"paper_dataset": paper_row, "dataset": dataset, "label": label}
            for key in ("method", "variant"):
                seen = first_seen(e[1][key] for e in group)
                if len(seen) > 1:
                    raise DataError(f"runs of {dataset} labelled {label!r} disagree on {key}: "
                                    f"{', '.join(map(repr, seen))}; give each (method, variant) its own label")
                row[key] = seen[0]
            scored = [e for e in group if e[2] is not None]
            row["n_seeds"] = len(group)
            row["n_scored"] = len(scored)
            images = [int(e[3]) for e in scored if math.isfinite(e[3])]
            images = first_seen(images)
            row["images"] = "; ".join(map(str, images)) if images else None
            for v in values:
                per_seed = np.array([e[2][v] for e in scored], float)
                per_seed = per_seed[np.isfinite(per_seed)]
                row[v] = _round(float(per_seed.mean())) if per_seed.size else math.nan
                row[f"{v}_std"] = _round(float(per_seed.std(ddof=1))) if per_seed.size > 1 else math.nan
            row.update(paper_cells)
            row["has_run"] = True
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(columns))
    df["n_seeds"] = df["n_seeds"].astype(int)
    df["n_scored"] = df["n_scored"].astype(int)
    df["has_run"] = df["has_run"].astype(bool)
    return df


def build_table3(runs: list[dict], paper: pd.DataFrame) -> pd.DataFrame:
    """One row per (Table III dataset, our dataset, label), in the paper's row order, seeds averaged; a paper
    row without runs is one row with ``has_run`` False. ``n_scored``: seeds with quality measures."""
    _check_runs(runs)
    return _build(table3_entries(runs, paper["dataset"]), paper, TABLE3_VALUES, True, TABLE3_COLUMNS)


def build_table4(runs: list[dict], paper: pd.DataFrame) -> pd.DataFrame:
    """As :func:`build_table3`, for Table IV (rows A1..A5 and mean)."""
    _check_runs(runs)
    return _build(table4_entries(runs, paper["dataset"]), paper, TABLE4_VALUES, False, TABLE4_COLUMNS)


# ------------------------------------------------------------------------------------------- Markdown

def _fmt(x: Any, decimals: int) -> str:
    return "n/a" if is_missing(x) else f"{float(x):.{decimals}f}"


def _cell(row: dict, v: str, decimals: int, top: bool) -> str:
    if row["has_run"] and row["n_scored"] == 0:
        ours = "not scored"
    else:
        ours = _fmt(row[v], decimals)
        if not is_missing(row[f"{v}_std"]):
            ours += f" ± {_fmt(row[f'{v}_std'], decimals)}"
    paper = f"paper {_fmt(row[f'paper_{v}'], decimals)}"
    if top:
        paper += f"; top {_fmt(row[f'paper_{v}_top'], decimals)}"
    return f"{ours} ({paper})"


def _markdown(df: pd.DataFrame, title: str, intro: list[str], values: tuple[str, ...], decimals: int, top: bool,
              note: str | None) -> str:
    out = [title, ""]
    if note:
        out += [f"> **{line}**" if line.strip() else ">" for line in note.strip().splitlines()] + [""]
    out += intro + [""]
    header = ["Paper row", "Our dataset", "Method", "Seeds", "Images"] + [HEADER_OF[v] for v in values]
    align = ["l", "l", "l", "r", "r"] + ["r"] * len(values)
    body = []
    for r in df.to_dict("records"):
        if not r["has_run"]:
            cells = [str(r["paper_dataset"]), "-", "(no run)", "0", "-"]
        else:
            seeds = str(int(r["n_seeds"]))
            if int(r["n_scored"]) != int(r["n_seeds"]):
                seeds += f" ({int(r['n_scored'])} scored)"
            cells = [str(r["paper_dataset"]), text(r["dataset"]).replace("|", "\\|"),
                     text(r["label"]).replace("|", "\\|"), seeds, text(r["images"]) or "-"]
        body.append(cells + [_cell(r, v, decimals, top) for v in values])
    out += markdown_table(header, align, body) + [""]
    return "\n".join(out)


def table3_truth_lines(runs: list[dict], paper_rows: Iterable[str]) -> list[str]:
    """Which measures apply to each Table III run, from its metrics' ``quality["truth"]``
    (:func:`objguided.metrics.quality.truth_summary`): on partial truth (CTC gold masks that annotate only
    some cells) SEG is over the annotated objects, DET from the TRA markers, and AP is flagged."""
    from objguided.metrics.quality import PARTIAL_AP_NOTE

    body, seen = [], set()
    for row, run, _, _ in table3_entries(runs, paper_rows):
        truth = (_quality(run) or {}).get("truth")
        key = (row, run["dataset"], run["label"])
        if not isinstance(truth, dict) or key in seen:
            continue
        seen.add(key)
        n, partial, markers = truth.get("images", 0), truth.get("partial", 0), truth.get("det_from_markers", 0)
        body.append([str(row), text(run["dataset"]).replace("|", "\\|"), text(run["label"]).replace("|", "\\|"),
                     f"partial on {partial} of {n} images" if partial else "complete",
                     "over the annotated objects" if partial else "over all objects",
                     f"from TRA markers ({markers} of {n} images)" if markers else "against the label map",
                     PARTIAL_AP_NOTE if partial else "comparable"])
    if not body:
        return []
    header = ["Paper row", "Our dataset", "Method", "Truth", "SEG", "DET", "AP (Table I, metrics.json)"]
    return ["", "## Which measures apply", ""] + markdown_table(header, ["l"] * 7, body) + [""]


def table3_markdown(df: pd.DataFrame, note: str | None = None, truth_lines: list[str] | None = None) -> str:
    """The Markdown text of Table III (from :func:`build_table3`), with :func:`table3_truth_lines` below."""
    intro = [
        "Cell Tracking Challenge segmentation measures (fractions): SEG (mean Jaccard over all reference",
        "objects, a reference object matched when a prediction covers more than half of it), DET (normalised",
        "AOGM-D, weights split 5, miss 10, extra 1) and OP_CSB = (SEG + DET) / 2, pooled over the scored",
        "images. Cells read `ours ± sample std over seeds (paper value; challenge top at the time)`; the paper's",
        "values are its method with refinement, on the challenge's test sequences (ours: our scored split,",
        "frames as independent 2-D images, detection against the TRA markers where the dataset keeps them, else",
        "the same masks; see objguided.metrics.quality and, on partial truth, `Which measures apply` below).",
        "`not scored`: the run's metrics hold no quality measures.",
    ]
    return _markdown(df, "# Table III: Cell Tracking Challenge (SEG, DET, OP_CSB)", intro, TABLE3_VALUES,
                     MD_DECIMALS["table3"], True, note) + "\n".join(truth_lines or [])


def table4_markdown(df: pd.DataFrame, note: str | None = None) -> str:
    """The Markdown text of Table IV (from :func:`build_table4`)."""
    intro = [
        "CVPPP Leaf Segmentation Challenge measures, per image then averaged over images: bestDice (symmetric",
        "best Dice), absDiffFG and diffFG (leaf count: predicted minus true, absolute and signed), FgBgDice",
        "(Dice of the foreground). The `mean` row is the mean over all images of a run covering several",
        "subsets. Cells read `ours ± sample std over seeds (paper value)`; the paper's values are one model",
        "trained on A1-A4 together, on the challenge's test images. `not scored`: the run's metrics hold no",
        "quality measures.",
    ]
    return _markdown(df, "# Table IV: Leaf Segmentation Challenge (CVPPP)", intro, TABLE4_VALUES,
                     MD_DECIMALS["table4"], False, note)


# ---------------------------------------------------------------------------------------------- write

def write_tables34(runs: list[dict], out_dir: str | os.PathLike, paper_dir: str | os.PathLike,
                   note: str | None = None) -> list[Path]:
    """Write ``table3.csv``/``table3.md`` when a run stands for a row of the paper's Table III, and
    ``table4.csv``/``table4.md`` likewise for Table IV (``paper_dir`` holds the paper's ``table3.csv`` and
    ``table4.csv``). Returns the files written; ``[]`` (nothing written) when no run qualifies."""
    runs = list(runs)
    _check_runs(runs)
    out_dir, paper_dir = Path(out_dir), Path(paper_dir)
    written: list[Path] = []
    paper3 = read_paper_table3(paper_dir / "table3.csv")
    if table3_entries(runs, paper3["dataset"]):
        df = build_table3(runs, paper3)
        paths = [out_dir / "table3.csv", out_dir / "table3.md"]
        write_text(paths[0], df.to_csv(index=False, lineterminator="\n"))
        write_text(paths[1], table3_markdown(df, note, table3_truth_lines(runs, paper3["dataset"])))
        written += paths
    paper4 = read_paper_table4(paper_dir / "table4.csv")
    if table4_entries(runs, paper4["dataset"]):
        df = build_table4(runs, paper4)
        paths = [out_dir / "table4.csv", out_dir / "table4.md"]
        write_text(paths[0], df.to_csv(index=False, lineterminator="\n"))
        write_text(paths[1], table4_markdown(df, note))
        written += paths
    return written
