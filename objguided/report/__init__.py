"""Report builders: pure functions from run records (see ``runs``) to tables and figures."""

from objguided.report.fig5 import make_fig5, plot_fig5
from objguided.report.runs import load_run, read_paper_table1
from objguided.report.table1 import build_table1, read_table1, table1_markdown, write_table1

__all__ = [
    "build_table1",
    "load_run",
    "make_fig5",
    "plot_fig5",
    "read_paper_table1",
    "read_table1",
    "table1_markdown",
    "write_table1",
]
