"""The `report` verb: gather the finished runs named by the DAG and write every report artefact."""

from __future__ import annotations

from pathlib import Path

from objguided.report.fig5 import plot_fig5
from objguided.report.runs import load_run, read_paper_table1
from objguided.report.table1 import build_table1, write_table1


def build_report(spec: dict, out: str | Path) -> list[Path]:
    """``spec``: {"runs": [{dataset, method, variant, seed, label, paper_dataset, paper_method, dir}],
    "paper_table1": path or None, "note": str or None}. Returns the files written."""
    out = Path(out)
    runs = [load_run(Path(r["dir"]), r["dataset"], r["method"], r["variant"], r["seed"], r["label"],
                     r.get("paper_dataset"), r.get("paper_method")) for r in spec["runs"]]
    paper = read_paper_table1(spec["paper_table1"]) if spec.get("paper_table1") else None
    table = build_table1(runs, paper)
    written = [out / "table1.csv", out / "table1.md", out / "fig5.png", out / "fig5.pdf"]
    write_table1(table, written[0], written[1], note=spec.get("note"))
    plot_fig5(runs, written[2], written[3], title="APseg against IoU threshold")
    return written
