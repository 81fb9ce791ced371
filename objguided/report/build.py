"""The `report` verb: gather the finished runs named by the DAG and write every report artefact.

The spec (JSON; ``report_spec`` in workflow/rules/common.smk writes it)::

    {"runs": [{"dataset", "method", "variant", "seed", "label", "paper_dataset", "paper_method", "dir",
               "params"}],                       # params: the variant's merged parameters (Table II)
     "datasets": {name: {"dir", "split", "subset"}},   # dataset folders (Figure 4); optional
     "paper_table1": path | null, "paper_table2": path | null, "note": str | null,
     "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95} | null,   # optional; null: no intervals
     "fig4": {"images": 3, "score_threshold": 0.5}}                       # optional

Outputs (``report_files`` lists them): table1.{csv,md,html}, extra_metrics.csv, table2.{csv,md,html}
(with a paper Table II), fig4_<dataset>.{png,pdf} (per dataset folder), fig5.{png,pdf}, report.html; and
table3/table4.{csv,md} (the CTC / CVPPP measures) only when a run stands for a row of the paper's Table III / IV.
"""

from __future__ import annotations

from pathlib import Path

from objguided.engine.atomic import write_text
from objguided.report.fig4 import DEFAULT_IMAGES, DEFAULT_SCORE_THRESHOLD, plot_fig4
from objguided.report.fig5 import plot_fig5
from objguided.report.html import build_extras, extras_html, report_html
from objguided.report.runs import load_run, read_paper_table1
from objguided.report.table1 import BOOTSTRAP, build_table1, table1_html, write_table1
from objguided.report.table2 import build_table2, read_paper_table2, table2_html, write_table2
from objguided.report.table34 import write_tables34


def report_files(datasets: list[str], table2: bool = True) -> list[str]:
    """Names of the files ``build_report`` writes for Figure 4 ``datasets`` (the DAG's report outputs).

    >>> report_files(["a"])[-4:]
    ['fig4_a.png', 'fig4_a.pdf', 'fig5.png', 'fig5.pdf']
    """
    names = ["report.html", "table1.csv", "table1.md", "table1.html", "extra_metrics.csv"]
    if table2:
        names += ["table2.csv", "table2.md", "table2.html"]
    for d in datasets:
        names += [f"fig4_{d}.png", f"fig4_{d}.pdf"]
    return names + ["fig5.png", "fig5.pdf"]


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
    t1 = [out / "table1.csv", out / "table1.md", out / "table1.html"]
    write_table1(table1, t1[0], t1[1], note=note, html_path=t1[2], bootstrap=bootstrap)
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
    fig4 = {}
    for dataset, data in (spec.get("datasets") or {}).items():
        png, pdf = out / f"fig4_{dataset}.png", out / f"fig4_{dataset}.pdf"
        plot_fig4(dataset, data, [r for r in runs if r["dataset"] == dataset], png, pdf,
                  int(fig4_opts.get("images", DEFAULT_IMAGES)),
                  float(fig4_opts.get("score_threshold", DEFAULT_SCORE_THRESHOLD)))
        fig4[dataset] = png
        written += [png, pdf]

    fig5 = [out / "fig5.png", out / "fig5.pdf"]
    plot_fig5(runs, fig5[0], fig5[1], title="APseg against IoU threshold")
    written += fig5

    extras_fragment = extras_html(extras) + "".join(
        f'<p>Paper {p.stem.replace("table", "Table ").replace("3", "III").replace("4", "IV")} measures: '
        f'<a href="{p.name}">{p.name}</a></p>' for p in tables34 if p.suffix == ".md")
    page = report_html(out, runs, table1=table1_html(table1, bootstrap), table2=table2_fragment,
                       extras=extras_fragment, fig4=fig4, fig5=fig5[0], note=note)
    write_text(out / "report.html", page)
    return [out / "report.html"] + written
