"""report.html: one static page with ours against the paper, Table I and II, the extra metrics, Figures 4 and 5, the
error analysis and loss curves, and every run.

Plain HTML with the style inlined and relative links only (no JS, no external CSS), so the report
folder opens from disk or any static host together with the run folders it links to. Per run it links
the logs (train, predict, score, time), metrics.json, speed.json and predictions.json, shows the
variant's parameters, and a provenance table (what every run shares once, above the runs; per run what
differs) read from the run's model file (``model.pt``, written by
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

            record = torch.load(model, map_location="cpu", weights_only=False, mmap=True)
            if isinstance(record, dict) and isinstance(record.get("provenance"), dict):
                prov = dict(record["provenance"])
                if "train_seconds" in record:
                    prov["train_seconds"] = record["train_seconds"]
                state = record.get("state")  # methods with a pretrained backbone record its real source
                if isinstance(state, dict) and isinstance(state.get("weights_source"), str):
                    prov["weights_source"] = state["weights_source"]
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
    if prov.get("weights_source") is not None:
        rows.append(("backbone weights", prov["weights_source"]))
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

    Not the paper's protocol (see docs/protocol.md): kept out of Table I.
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


def shared_provenance(provenances: list[tuple[dict | None, str]]) -> dict[str, str]:
    """The provenance fields (``provenance_rows``) whose value every run shares, with that value; none for one run.

    >>> shared_provenance([({"git_commit": "a", "seed": 0}, "model.pt"), ({"git_commit": "a", "seed": 1}, "model.pt")])
    {'git commit': 'a', 'config hash': '', 'device': '', 'CUDA': '', 'packages': '', 'host': '', 'time': ''}
    """
    if len(provenances) < 2:
        return {}
    rows = [dict(provenance_rows(p)) for p, _ in provenances]
    return {k: v for k, v in rows[0].items() if all(r.get(k) == v for r in rows[1:])}


def provenance_table(rows: list[tuple[str, str]], header: list[str]) -> str:
    return html_table(header, ["l", "l"], [[esc(k), f"<code>{esc(v)}</code>" if v else ""] for k, v in rows])


def run_section(run: dict, out_dir: Path, provenance: tuple[dict | None, str] | None = None,
                shared: dict[str, str] | None = None, losses: Path | None = None) -> str:
    """One run: links to its logs and result files (and its dataset's loss curves), its parameters, and its
    provenance table, less the fields in ``shared`` (shown once for all runs)."""
    run_dir = Path(run["dir"])
    name = f"{run['label']}: {run['method']}/{run['variant']}, seed {run['seed']}"
    logs = " ".join(_link(run_dir / f, out_dir, f) for f in LOGS)
    files = " ".join(_link(run_dir / f, out_dir, f) for f in RESULTS)
    if (run_dir / "losses.csv").is_file():  # only runs on the shared trainer log their losses
        files += " " + _link(run_dir / "losses.csv", out_dir, "losses.csv")
        if losses is not None:
            files += " " + _link(losses, out_dir, "loss curves")
    prov, source = provenance or read_provenance(run_dir)
    own = [(k, v) for k, v in provenance_rows(prov) if k not in (shared or {})]
    table = provenance_table(own, ["Provenance" + (" (what differs)" if shared else ""), f"from {source}"])
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
                title: str = "objguided: reproduction report", vs_paper: Path | None = None,
                losses: dict[str, Path] | None = None, errors: dict[str, Path] | None = None) -> str:
    """The page. ``table1``/``table2``/``extras``: HTML fragments; ``fig4``, ``losses``, ``errors``: dataset -> PNG
    (Figure 4's PDF beside it); ``vs_paper``: the ours-against-the-paper PNG (PDF beside it)."""
    out = Path(out_dir)
    losses, errors = losses or {}, errors or {}
    parts = [f"<h1>{esc(title)}</h1>"]
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    for line in notes or []:
        parts.append(f'<p class="muted">{esc(line)}</p>')
    parts.append('<nav><a href="#vs-paper">Ours vs the paper</a><a href="#table1">Table I</a>'
                 '<a href="#extras">Extra metrics</a><a href="#table2">Table II</a><a href="#fig4">Figure 4</a>'
                 '<a href="#errors">Error analysis</a><a href="#fig5">Figure 5</a><a href="#losses">Loss curves</a>'
                 '<a href="#runs">Runs</a></nav>')
    if vs_paper is not None:
        parts += ['<section id="vs-paper">', "<h2>Ours against the paper</h2>",
                  '<p class="muted">Each point is one (dataset, method) row of Table I that stands for a row of the '
                  "paper's Table I: at the paper's AP (x) and ours (y), with our 95% bootstrap interval over the test "
                  "images as its bar (the seed std where there is none). On the dashed line y = x a number is "
                  "reproduced; below it, ours falls short.</p>",
                  _figure(vs_paper, vs_paper.with_suffix(".pdf"), out, "Ours against the paper"), "</section>"]
    parts += ['<section id="table1">', "<h2>Table I: instance segmentation AP (%) and speed</h2>", table1,
              _files([out / "table1.csv", out / "table1.md", out / "table1.html", out / "table1.tex"], out),
              "</section>"]
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
    parts += ["</section>", '<section id="fig4">', "<h2>Figure 4: qualitative results</h2>",
              '<p class="muted">The same first test images for every method (its lowest seed), each method drawn at '
              "its own operating point: the score threshold that maximises F1 at IoU 0.5 over the test images "
              "(printed under its name). It only chooses what is drawn; AP ranks every prediction.</p>"]
    if not fig4:
        parts.append('<p class="muted">Not drawn: the report spec names no dataset folders.</p>')
    for dataset, png in fig4.items():
        parts += [f"<h3>{esc(dataset)}</h3>", _figure(png, png.with_suffix(".pdf"), out, f"Figure 4, {dataset}")]
    parts.append("</section>")
    parts += _figures_section("errors", "Error analysis: each method's worst test images", errors, out,
                              "Per method (its lowest seed), the test images with the lowest APseg; its predictions "
                              "at its operating point (as in Figure 4): true positives (mask IoU &gt; 0.5) in green, "
                              "false positives in red, ground-truth objects no drawn prediction matched in blue.")
    parts += ['<section id="fig5">', "<h2>Figure 5: APseg against the IoU threshold</h2>",
              _figure(fig5, fig5.with_suffix(".pdf"), out, "Figure 5"), "</section>"]
    parts += _figures_section("losses", "Loss curves", losses, out,
                              "Every run's losses.csv (the total loss the shared trainer minimises), one panel per "
                              "method, seeds overlaid.")
    parts += runs_section(runs, out, losses)
    return html_document(title, "\n".join(parts))


def _figures_section(anchor: str, heading: str, pngs: dict[str, Path], out: Path, intro: str) -> list[str]:
    parts = [f'<section id="{anchor}">', f"<h2>{esc(heading)}</h2>", f'<p class="muted">{intro}</p>']
    if not pngs:
        parts.append('<p class="muted">Not drawn: the report spec names no dataset folders.</p>')
    for dataset, png in pngs.items():
        parts += [f"<h3>{esc(dataset)}</h3>", _figure(png, None, out, f"{heading}, {dataset}")]
    return parts + ["</section>"]


def runs_section(runs: list[dict], out: Path, losses: dict[str, Path]) -> list[str]:
    """Every run's card; the provenance every run shares is shown once, above them."""
    provenances = [read_provenance(r["dir"]) for r in runs]
    shared = shared_provenance(provenances)
    parts = ['<section id="runs">', "<h2>Runs</h2>"]
    if shared:
        parts += [f'<p class="muted">Shared by all {len(runs)} runs (each card below shows only what differs):</p>',
                  provenance_table(list(shared.items()), ["Provenance", "value"])]
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        parts += [f"<h3>{esc(dataset)}</h3>", '<div class="runs">']
        parts += [run_section(r, out, p, shared, losses.get(dataset))
                  for r, p in zip(runs, provenances) if r["dataset"] == dataset]
        parts.append("</div>")
    return parts + ["</section>"]
