"""The `report` verb: gather the finished runs named by the DAG and write every report artefact.

The spec (JSON; ``report_spec`` in workflow/rules/common.smk writes it)::

    {"runs": [{"dataset", "method", "variant", "seed", "label", "paper_dataset", "paper_method", "dir",
               "params"}],                       # params: the variant's merged parameters (Table II)
     "datasets": {name: {"dir", "split", "subset"}},   # dataset folders (Figure 4); optional
     "paper_table1": path | null, "paper_table2": path | null, "note": str | null,
     "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95} | null,   # optional; null: no intervals
     "fig4": {"images": 3, "score_threshold": 0.5},   # optional; score_threshold: only for runs without match data
     "compute": path}   # optional: a compute record (objguided.report.compute) -> ap_vs_compute.png

Outputs (``report_files`` lists them): table1.{csv,md,html,tex}, extra_metrics.csv, table2.{csv,md,html}
(with a paper Table II), per dataset folder fig4_<dataset>.{png,pdf}, errors_<dataset>.png and
loss_curves_<dataset>.png, fig5.{png,pdf}, ours_vs_paper.{png,pdf}, report.html; and table3/table4.{csv,md} (the
CTC / CVPPP measures) only when a run stands for a row of the paper's Table III / IV. Report files of an earlier
report that this one does not write (another config's datasets or tables) are deleted.
"""

from __future__ import annotations

from pathlib import Path

from objguided.engine.atomic import write_text
from objguided.report.compute import ap_vs_compute_report
from objguided.report.errors import plot_errors
from objguided.report.fig4 import DEFAULT_IMAGES, DEFAULT_SCORE_THRESHOLD, plot_fig4
from objguided.report.fig5 import plot_fig5
from objguided.report.html import build_extras, extras_html, report_html
from objguided.report.losses import plot_loss_curves
from objguided.report.runs import load_run, read_paper_table1
from objguided.report.table1 import BOOTSTRAP, build_table1, table1_html, write_table1
from objguided.report.table2 import build_table2, read_paper_table2, table2_html, write_table2
from objguided.report.table34 import write_tables34
from objguided.report.vs_paper import plot_vs_paper


def report_files(datasets: list[str], table2: bool = True) -> list[str]:
    """Names of the files ``build_report`` writes for the dataset folders ``datasets`` (the DAG's report outputs).

    >>> report_files(["a"])[-8:-1]
    ['fig4_a.png', 'fig4_a.pdf', 'errors_a.png', 'loss_curves_a.png', 'fig5.png', 'fig5.pdf', 'ours_vs_paper.png']
    """
    names = ["report.html", "table1.csv", "table1.md", "table1.html", "table1.tex", "extra_metrics.csv"]
    if table2:
        names += ["table2.csv", "table2.md", "table2.html"]
    for d in datasets:
        names += [f"fig4_{d}.png", f"fig4_{d}.pdf", f"errors_{d}.png", f"loss_curves_{d}.png"]
    return names + ["fig5.png", "fig5.pdf", "ours_vs_paper.png", "ours_vs_paper.pdf"]


#: Every file name a report may write (table3/table4 only with CTC / LSC runs): what is not this report's is a
#: previous config's and goes, so that the folder never mixes two configs' artefacts.
REPORT_PATTERNS = ("report.html", "table[1-4].*", "extra_metrics.csv", "fig4_*.png", "fig4_*.pdf", "errors_*.png",
                   "loss_curves_*.png", "fig5.png", "fig5.pdf", "ours_vs_paper.png", "ours_vs_paper.pdf",
                   "ap_vs_compute.png")


def remove_stale(out: Path, keep: list[Path]) -> list[Path]:
    """Delete the report files in ``out`` (``REPORT_PATTERNS``) that are not in ``keep``; returns them."""
    keep_names = {p.name for p in keep}
    stale = sorted({p for pattern in REPORT_PATTERNS for p in out.glob(pattern)
                    if p.is_file() and p.name not in keep_names})
    for p in stale:
        p.unlink()
    return stale


def build_report(spec: dict, out: str | Path) -> list[Path]:
    """Write every report artefact of ``spec`` (see the module docstring) into ``out``; returns the files."""
    out = Path(out)
    runs = []
    for r in spec["runs"]:
        run = load_run(Path(r["dir"]), r["dataset"], r["method"], r["variant"], r["seed"], r["label"],
                       r.get("paper_dataset"), r.get("paper_method"))
        runs.append(run | {"dir": r["dir"], "params": r.get("params")})
    bootstrap = spec.get("bootstrap", BOOTSTRAP)
    bootstrap = None if bootstrap is None else {**BOOTSTRAP, **bootstrap}
    note = spec.get("note")
    written: list[Path] = []

    paper1 = read_paper_table1(spec["paper_table1"]) if spec.get("paper_table1") else None
    table1 = build_table1(runs, paper1, bootstrap)
    t1 = [out / "table1.csv", out / "table1.md", out / "table1.html", out / "table1.tex"]
    write_table1(table1, t1[0], t1[1], note=note, html_path=t1[2], bootstrap=bootstrap, tex_path=t1[3])
    extras = build_extras(runs)
    write_text(out / "extra_metrics.csv", extras.to_csv(index=False, lineterminator="\n"))
    written += t1 + [out / "extra_metrics.csv"]

    table2_fragment = None
    if spec.get("paper_table2"):
        table2 = build_table2(runs, read_paper_table2(spec["paper_table2"]), bootstrap)
        t2 = [out / "table2.csv", out / "table2.md", out / "table2.html"]
        write_table2(table2, t2[0], t2[1], t2[2], note=note)
        table2_fragment = table2_html(table2)
        written += t2

    # Tables III / IV (CTC, CVPPP measures) only when a run stands for one of their rows: extra files
    tables34 = write_tables34(runs, out, Path(spec["paper_table1"]).parent) if spec.get("paper_table1") else []
    written += tables34

    fig4_opts = spec.get("fig4") or {}
    fig4, errors, losses = {}, {}, {}
    for dataset, data in (spec.get("datasets") or {}).items():
        of_dataset = [r for r in runs if r["dataset"] == dataset]
        png, pdf = out / f"fig4_{dataset}.png", out / f"fig4_{dataset}.pdf"
        plot_fig4(dataset, data, of_dataset, png, pdf, int(fig4_opts.get("images", DEFAULT_IMAGES)),
                  float(fig4_opts.get("score_threshold", DEFAULT_SCORE_THRESHOLD)))
        fig4[dataset], errors[dataset], losses[dataset] = png, out / f"errors_{dataset}.png", \
            out / f"loss_curves_{dataset}.png"
        plot_errors(dataset, data, of_dataset, errors[dataset])
        plot_loss_curves(dataset, of_dataset, losses[dataset])
        written += [png, pdf, errors[dataset], losses[dataset]]

    fig5 = [out / "fig5.png", out / "fig5.pdf"]
    plot_fig5(runs, fig5[0], fig5[1], title="APseg against IoU threshold")
    vs_paper = [out / "ours_vs_paper.png", out / "ours_vs_paper.pdf"]
    plot_vs_paper(table1, vs_paper[0], vs_paper[1])
    written += fig5 + vs_paper
    if spec.get("compute"):  # a compute record (benchmarks/cpu_dsb2018.py): AP against training compute
        written.append(ap_vs_compute_report(spec["compute"], out, spec.get("paper_table1")))

    extras_fragment = extras_html(extras) + "".join(
        f'<p>Paper {p.stem.replace("table", "Table ").replace("3", "III").replace("4", "IV")} measures: '
        f'<a href="{p.name}">{p.name}</a></p>' for p in tables34 if p.suffix == ".md")
    page = report_html(out, runs, table1=table1_html(table1, bootstrap), table2=table2_fragment,
                       extras=extras_fragment, fig4=fig4, fig5=fig5[0], note=note, vs_paper=vs_paper[0],
                       losses=losses, errors=errors)
    write_text(out / "report.html", page)
    written = [out / "report.html"] + written
    remove_stale(out, written)
    return written
