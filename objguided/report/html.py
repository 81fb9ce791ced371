"""report.html: one static page with Table I and II, the extra metrics, Figures 4 and 5, and every run.

Plain HTML with the style inlined and relative links only (no JS, no external CSS), so the report
folder opens from disk or any static host together with the run folders it links to. Per run it links
the logs (train, predict, score, time), metrics.json, speed.json and predictions.json, shows the
variant's parameters, and a provenance table read from the run's model file (``model.pt``, written by
``objguided train``: git commit, config hash, seed, device, CUDA, package versions, host, time).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from objguided.report.markup import esc, html_document, html_table, is_missing

LOGS = ("train.log", "predict.log", "score.log")
RESULTS = ("metrics.json", "speed.json", "predictions.json", "model.pt")


# --- provenance ------------------------------------------------------------------------------------------


def read_provenance(run_dir: str | os.PathLike) -> tuple[dict | None, str]:
    """(provenance dict, where it came from): the model file's, else the score step's (metrics.json), else None.

    The model file is memory-mapped (``mmap=True``), so a large model is not read to get its record.
    """
    run_dir = Path(run_dir)
    model = run_dir / "model.pt"
    if model.is_file():
        try:
            import torch

            try:
                record = torch.load(model, map_location="cpu", weights_only=False, mmap=True)
            except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
                record = torch.load(model, map_location="cpu", weights_only=False)
            if isinstance(record, dict) and isinstance(record.get("provenance"), dict):
                prov = dict(record["provenance"])
                if "train_seconds" in record:
                    prov["train_seconds"] = record["train_seconds"]
                return prov, "model.pt"
        except Exception:  # noqa: BLE001 - a damaged model file must not stop the report; fall back
            pass
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            prov = json.loads(metrics.read_text()).get("provenance")
        except (OSError, json.JSONDecodeError):
            prov = None
        if isinstance(prov, dict):
            return prov, "metrics.json (score step; model.pt unreadable or missing)"
    return None, "none found"


def provenance_rows(prov: dict | None) -> list[tuple[str, str]]:
    """(field, value) pairs for a run's provenance table.

    >>> provenance_rows({"git_commit": "abc", "seed": 0, "packages": {"python": "3.11", "torch": "2.3"}})[:3]
    [('git commit', 'abc'), ('config hash', ''), ('seed', '0')]
    """
    prov = prov or {}
    rows = [("git commit", prov.get("git_commit")), ("config hash", prov.get("config_hash")),
            ("seed", prov.get("seed")), ("device", prov.get("device")), ("CUDA", prov.get("cuda"))]
    packages = prov.get("packages") or {}
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in packages.items() if v)))
    split = prov.get("split")
    if isinstance(split, dict):  # models trained since the split record was kept
        sizes = ", ".join(f"{k} {v}" for k, v in (split.get("sizes") or {}).items())
        rows.append(("split", f"sha256 {str(split.get('sha256'))[:16]} ({sizes})"))
    rows += [("host", prov.get("host")), ("time", prov.get("time"))]
    if prov.get("train_seconds") is not None:
        rows.append(("train seconds", f"{float(prov['train_seconds']):.1f}"))
    return [(k, "" if v is None else str(v)) for k, v in rows]


# --- extra metrics ----------------------------------------------------------------------------------------

EXTRA_KEYS = {"coco_ap_seg": "COCO mask AP@[.5:.95] (%)", "dsb_score": "DSB2018 score (%)",
              "ctc_seg": "CTC SEG (%)", "ctc_det": "CTC DET (%)", "best_dice": "CVPPP bestDice (%)",
              "fg_bg_dice": "CVPPP FgBgDice (%)"}
#: where each extra value sits in metrics.json (the CTC / CVPPP measures: objguided.metrics.quality)
EXTRA_PATHS = {"coco_ap_seg": ("extra", "coco_ap_seg"), "dsb_score": ("extra", "dsb_score"),
               "ctc_seg": ("quality", "ctc", "seg"), "ctc_det": ("quality", "ctc", "det"),
               "best_dice": ("quality", "cvppp", "best_dice"), "fg_bg_dice": ("quality", "cvppp", "fg_bg_dice")}


def _extra_value(metrics: dict, key: str):
    """metrics.json's value of an extra column, or None where the run has none (older runs, --no-extras).

    >>> _extra_value({"quality": {"ctc": {"seg": 0.5}}}, "ctc_seg"), _extra_value({}, "dsb_score")
    (0.5, None)
    """
    value: Any = metrics
    for part in EXTRA_PATHS[key]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def build_extras(runs: list[dict]) -> pd.DataFrame:
    """Per (dataset, label): seed mean and sample std (percent) of the extra values (:data:`EXTRA_PATHS`).

    Not the paper's protocol (see REFERENCE.md section 2): kept out of Table I.
    """
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        in_dataset = [r for r in runs if r["dataset"] == dataset]
        for label in dict.fromkeys(r["label"] for r in in_dataset):
            group = [r for r in in_dataset if r["label"] == label]
            row: dict[str, Any] = {"dataset": dataset, "label": label, "n_seeds": len(group)}
            for key in EXTRA_KEYS:
                vals = [_extra_value(r["metrics"], key) for r in group]
                arr = np.array([100.0 * v for v in vals if isinstance(v, (int, float))], float)
                row[key] = round(float(arr.mean()), 2) if arr.size else math.nan
                row[f"{key}_std"] = round(float(arr.std(ddof=1)), 2) if arr.size > 1 else math.nan
            rows.append(row)
    cols = ["dataset", "label", "n_seeds"] + [c for k in EXTRA_KEYS for c in (k, f"{k}_std")]
    return pd.DataFrame(rows, columns=cols)


def extras_html(df: pd.DataFrame) -> str:
    header = ["Dataset", "Method", "Seeds"] + list(EXTRA_KEYS.values())
    body = []
    for r in df.to_dict("records"):
        cells = [esc(r["dataset"]), esc(r["label"]), str(r["n_seeds"])]
        for key in EXTRA_KEYS:
            v, s = r[key], r[f"{key}_std"]
            cells.append("n/a" if is_missing(v) else f"{v:.2f}" + ("" if is_missing(s) else f" ± {s:.2f}"))
        body.append(cells)
    return html_table(header, ["l", "l", "r"] + ["r"] * len(EXTRA_KEYS), body)


# --- the page ---------------------------------------------------------------------------------------------


def rel(target: str | os.PathLike, out_dir: str | os.PathLike) -> str:
    """A relative, URL-quoted link from ``out_dir`` to ``target``.

    >>> rel("results/synth/ws/default/seed0/train.log", "results/report")
    '../synth/ws/default/seed0/train.log'
    """
    return quote(Path(os.path.relpath(Path(target).absolute(), Path(out_dir).absolute())).as_posix())


def _link(target: Path, out_dir: Path, text: str) -> str:
    if target.exists():
        return f'<a href="{rel(target, out_dir)}">{esc(text)}</a>'
    return f'<span class="muted">{esc(text)} (missing)</span>'


def run_section(run: dict, out_dir: Path) -> str:
    """One run: links to its logs and result files, its parameters, and its provenance table."""
    run_dir = Path(run["dir"])
    name = f"{run['label']}: {run['method']}/{run['variant']}, seed {run['seed']}"
    logs = " ".join(_link(run_dir / f, out_dir, f) for f in LOGS)
    files = " ".join(_link(run_dir / f, out_dir, f) for f in RESULTS)
    prov, source = read_provenance(run_dir)
    table = html_table(["Provenance", f"from {source}"], ["l", "l"],
                       [[esc(k), f"<code>{esc(v)}</code>" if v else ""] for k, v in provenance_rows(prov)])
    params = run.get("params")
    params_html = (f"<details><summary>parameters (the config's overrides of the method's defaults)</summary>"
                   f"<pre>{esc(json.dumps(params, indent=1, sort_keys=True))}</pre></details>"
                   if params is not None else '<p class="muted">parameters: not in the report spec</p>')
    return (f'<div class="run" id="{esc(_anchor(run))}"><h4>{esc(name)}</h4>\n'
            f"<p>logs: {logs}<br>results: {files}<br>"
            f'<span class="muted">folder: {esc(run_dir.as_posix())}</span></p>\n{params_html}\n{table}</div>')


def _anchor(run: dict) -> str:
    return f"run-{run['dataset']}-{run['method']}-{run['variant']}-seed{run['seed']}"


def _figure(png: Path, pdf: Path | None, out_dir: Path, alt: str) -> str:
    if not png.exists():
        return f'<p class="muted">{esc(alt)}: not drawn.</p>'
    links = f'<a href="{rel(png, out_dir)}">PNG</a>' + (f' · <a href="{rel(pdf, out_dir)}">PDF</a>' if pdf else "")
    return f'<p><img class="fig" src="{rel(png, out_dir)}" alt="{esc(alt)}"></p>\n<p class="muted">{links}</p>'


def _files(paths: list[Path], out_dir: Path) -> str:
    return '<p class="muted">files: ' + " · ".join(_link(p, out_dir, p.name) for p in paths) + "</p>"


def report_html(out_dir: str | os.PathLike, runs: list[dict], *, table1: str, table2: str | None, extras: str,
                fig4: dict[str, Path], fig5: Path, note: str | None = None, notes: list[str] | None = None,
                title: str = "objguided: reproduction report") -> str:
    """The page. ``table1``/``table2``/``extras``: HTML fragments; ``fig4``: dataset -> PNG (PDF beside it)."""
    out = Path(out_dir)
    parts = [f"<h1>{esc(title)}</h1>"]
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    for line in notes or []:
        parts.append(f'<p class="muted">{esc(line)}</p>')
    parts.append('<nav><a href="#table1">Table I</a><a href="#extras">Extra metrics</a><a href="#table2">Table II</a>'
                 '<a href="#fig4">Figure 4</a><a href="#fig5">Figure 5</a><a href="#runs">Runs</a></nav>')
    parts += ['<section id="table1">', "<h2>Table I: instance segmentation AP (%) and speed</h2>", table1,
              _files([out / "table1.csv", out / "table1.md", out / "table1.html"], out), "</section>"]
    parts += ['<section id="extras">', "<h2>Extra metrics (not the paper's protocol)</h2>",
              '<p class="muted">Other AP definitions give other numbers for the same masks: COCO mask AP '
              "(101-point, all GT objects, detection cap lifted) and the 2018 Data Science Bowl score (per image "
              "mean over thresholds of TP/(TP+FP+FN), then mean over images); and, on the predicted instances "
              "painted into one label map (higher score on top), the Cell Tracking Challenge's SEG and DET "
              "(Table III's measures) and the CVPPP challenge's symmetric best Dice and foreground Dice "
              "(Table IV's). Mean ± sample std over seeds.</p>",
              extras, _files([out / "extra_metrics.csv"], out), "</section>"]
    parts += ['<section id="table2">', "<h2>Table II: sampling strategies of the refinement module (APseg, %)</h2>"]
    if table2 is None:
        parts.append('<p class="muted">Not built: the report spec names no paper Table II.</p>')
    else:
        parts += [table2, _files([out / "table2.csv", out / "table2.md", out / "table2.html"], out)]
    parts += ["</section>", '<section id="fig4">', "<h2>Figure 4: qualitative results</h2>"]
    if not fig4:
        parts.append('<p class="muted">Not drawn: the report spec names no dataset folders.</p>')
    for dataset, png in fig4.items():
        parts += [f"<h3>{esc(dataset)}</h3>", _figure(png, png.with_suffix(".pdf"), out, f"Figure 4, {dataset}")]
    parts += ["</section>", '<section id="fig5">', "<h2>Figure 5: APseg against the IoU threshold</h2>",
              _figure(fig5, fig5.with_suffix(".pdf"), out, "Figure 5"), "</section>"]
    parts += ['<section id="runs">', "<h2>Runs</h2>"]
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        parts.append(f"<h3>{esc(dataset)}</h3>")
        parts += ['<div class="runs">'] + [run_section(r, out) for r in runs if r["dataset"] == dataset] + ["</div>"]
    parts.append("</section>")
    return html_document(title, "\n".join(parts))
