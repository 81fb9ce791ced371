"""Report builders: pure functions from run records (see ``runs``) to tables and figures.

``build.build_report`` (the `report` verb) strings them together: Table I with bootstrap intervals
(``table1``, ``bootstrap``), Table II (``table2``), Figures 4 and 5 (``fig4``, ``fig5``) and report.html
(``html``).
"""

from objguided.report.fig5 import make_fig5, plot_fig5
from objguided.report.runs import load_run, read_paper_table1
from objguided.report.table1 import build_table1, read_table1, table1_markdown, write_table1
from objguided.report.table2 import build_table2, read_paper_table2, write_table2

__all__ = [
    "build_table1",
    "build_table2",
    "load_run",
    "make_fig5",
    "plot_fig5",
    "read_paper_table1",
    "read_paper_table2",
    "read_table1",
    "table1_markdown",
    "write_table1",
    "write_table2",
]
