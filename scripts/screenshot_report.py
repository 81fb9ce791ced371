#!/usr/bin/env python3
"""PNG screenshots of a report.html with headless Chromium: the top of the page and each section.

    python scripts/screenshot_report.py results/report/report.html --out benchmarks/results/report_screenshots

The top shot is the first ``--width`` x ``--height`` pixels of the page. For each section
(``--sections``: ids of the page's ``<section>`` elements) a temporary copy of the page is written beside it
(so its relative links and images still resolve) with every other part hidden, shot in a tall window
(``--max-height``) and cropped below its last non-white row: one PNG per section, whole. (Chromium's
``--screenshot`` ignores ``#anchor`` scrolling, hence the copies.) Needs Chromium (or Chrome): install it with
``sudo apt-get install -y chromium`` (Debian/Ubuntu; ``chromium-browser`` on older Ubuntu), or point
``CHROMIUM`` at the binary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SECTIONS = ("vs-paper", "table1", "extras", "table2", "fig4", "errors", "fig5", "losses", "runs")
BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = ("headless Chromium not found: install it with `sudo apt-get install -y chromium` "
                "(Debian/Ubuntu; `chromium-browser` on older Ubuntu, or Google Chrome), or set CHROMIUM to the binary")


def find_chromium() -> str | None:
    """The browser binary: $CHROMIUM, else the first of ``BINARIES`` on the PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(browser: str, url: str, png: Path, width: int, height: int, timeout: int = 120) -> None:
    """One viewport-sized PNG of ``url``; raises RuntimeError with the browser's message when it fails."""
    png.parent.mkdir(parents=True, exist_ok=True)
    cmd = [browser, "--headless=new", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--virtual-time-budget=3000",
           f"--window-size={width},{height}", f"--screenshot={png.absolute()}", url]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 or not png.exists():
        raise RuntimeError(f"{browser} failed on {url} (exit {result.returncode}): {result.stderr[-1500:]}")


def isolate(page: str, section: str) -> str:
    """The page with only ``<section id="section">`` shown (a style appended to its head)."""
    style = f"<style>body > *:not(#{section}) {{ display: none !important; }}</style>"
    return page.replace("</head>", style + "\n</head>", 1)


def trim_bottom(png: Path, margin: int = 24) -> bool:
    """Crop the blank (white) rows below the content, keeping ``margin`` pixels; False when there were none
    (the content may go on below the window)."""
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    rows = np.flatnonzero((rgb < 250).any(axis=(1, 2)))
    if rows.size == 0 or int(rows[-1]) >= rgb.shape[0] - margin:
        return rows.size == 0
    Image.fromarray(rgb[: int(rows[-1]) + 1 + margin]).save(png)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.html")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/report_screenshots"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated anchors of report.html")
    parser.add_argument("--max-height", type=int, default=8000, help="window height of the section shots")
    parser.add_argument("--prefix", default="report", help="file name prefix of the shots")
    args = parser.parse_args(argv)

    if not args.report.is_file():
        print(f"screenshot_report: {args.report}: not found", file=sys.stderr)
        return 2
    browser = find_chromium()
    if browser is None:
        print(f"screenshot_report: {INSTALL_HINT}", file=sys.stderr)
        return 2
    page = args.report.read_text()
    try:
        top = args.out / f"{args.prefix}_top.png"
        screenshot(browser, args.report.absolute().as_uri(), top, args.width, args.height)
        print(top)
        for section in [s for s in args.sections.split(",") if s]:
            if f'<section id="{section}"' not in page:
                print(f"screenshot_report: no <section id=\"{section}\"> in {args.report}; skipped", file=sys.stderr)
                continue
            copy = args.report.with_name(f".screenshot_{section}.html")
            png = args.out / f"{args.prefix}_{section}.png"
            try:
                copy.write_text(isolate(page, section))
                screenshot(browser, copy.absolute().as_uri(), png, args.width, args.max_height)
            finally:
                copy.unlink(missing_ok=True)
            if not trim_bottom(png):
                print(f"screenshot_report: {png}: the section is taller than --max-height {args.max_height}; "
                      "cut there", file=sys.stderr)
            print(png)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"screenshot_report: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
