"""Small text helpers shared by the report's tables: Markdown and plain HTML tables, one style sheet.

No template engine and no JS: the report is static HTML that opens from disk, with the style inlined.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

import pandas as pd

#: The one style sheet of every HTML page of the report (inlined: no external CSS).
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1.5em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.2em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; margin: 1em 0; }
.muted { color: #666; font-size: 0.9em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.5em; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
td.r { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.missing td { color: #999; }
.ci { color: #555; font-size: 0.85em; display: block; }
.paper { color: #1a5fb4; font-size: 0.85em; display: block; }
img.fig { max-width: 100%; height: auto; border: 1px solid #eee; }
code, pre { font-size: 0.85em; background: #f6f6f6; }
pre { padding: 0.4em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
nav a { margin-right: 1em; }
details { margin: 0.4em 0 0.8em 0; }
.runs { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 0.8em; }
.run { border: 1px solid #ddd; border-radius: 4px; padding: 0.2em 0.9em 0.5em 0.9em; min-width: 0; }
.run h4 { margin: 0.5em 0 0.3em 0; }
.run table { font-size: 0.8em; }
.run td code { font-size: 1em; background: none; }
.run td:first-child { white-space: nowrap; }
""".strip()


def is_missing(x: Any) -> bool:
    """None, NaN and pandas' missing values.

    >>> is_missing(None), is_missing(float("nan")), is_missing(0.0), is_missing("")
    (True, True, False, False)
    """
    return x is None or (isinstance(x, float) and math.isnan(x)) or (not isinstance(x, str) and bool(pd.isna(x)))


def text(x: Any) -> str:
    """A value as table text; a missing value is empty.

    >>> text(3), text(None)
    ('3', '')
    """
    return "" if is_missing(x) else str(x)


def esc(text: Any) -> str:
    """HTML-escaped text; a missing value is empty.

    >>> esc("a<b & c"), esc(None)
    ('a&lt;b &amp; c', '')
    """
    return "" if is_missing(text) else html.escape(str(text))


def markdown_table(header: list[str], align: list[str], body: list[list[str]]) -> list[str]:
    """Lines of a padded Markdown table; ``align`` holds "l" or "r" per column.

    >>> print("\\n".join(markdown_table(["a", "b"], ["l", "r"], [["x", "1.5"]])))
    | a   |   b |
    | --- | --: |
    | x   | 1.5 |
    """
    cells = [header] + body
    widths = [max(3, *(len(r[j]) for r in cells)) for j in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if a == "r" else "-" * w for w, a in zip(widths, align)) + " |"
    return [line(header), rule] + [line(r) for r in body]


def html_table(header: Sequence[str], align: Sequence[str], body: Sequence[Sequence[str]],
               row_classes: Sequence[str] | None = None, caption: str | None = None) -> str:
    """A plain HTML table, wrapped to scroll sideways when wide. Header is text (escaped here); body cells
    are HTML already (escape text with ``esc``).

    >>> print(html_table(["a"], ["r"], [["1"]]))
    <div class="scroll"><table>
    <thead><tr><th>a</th></tr></thead>
    <tbody>
    <tr><td class="r">1</td></tr>
    </tbody></table></div>
    """
    out = ['<div class="scroll"><table>']
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(body):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        tds = "".join(f'<td class="r">{c}</td>' if a == "r" else f"<td>{c}</td>" for c, a in zip(row, align))
        out.append(f"<tr{cls}>{tds}</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def html_document(title: str, body: str) -> str:
    """A complete standalone HTML page with the report's inlined style."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>\n{CSS}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
