"""Report builders: pure functions from run records (see ``runs``) to tables and figures.

``build.build_report`` (the `report` verb) strings them together: Table I as a leaderboard with bootstrap
intervals and a LaTeX export (``table1``, ``bootstrap``), ours against the paper (``vs_paper``), Table II
(``table2``), Figures 4 and 5 (``fig4``, ``fig5``; Figure 4 at each method's operating point, ``analysis``), the
error analysis (``errors``), the loss curves (``losses``) and report.html (``html``).
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
