"""Benchmark: `objguided convert` on every real archive layout the harness reads, with counts and times.

The CTC and CVPPP LSC archives are not available here: their miniatures (tests/data/ctc/*.zip,
tests/data/lsc/CVPPP2017_LSC_training.zip, real names, folders and LZW/deflate compression, made by
tests/data/make_*_mini.py) stand in. DSB2018 runs on the real stage1_train.zip (../shared/data mirror,
fetched through `objguided fetch` first) and on tests/data/dsb2018_mini.zip (three real images). Each
conversion is its own `python -m objguided convert` process, as Snakemake runs it; wall and CPU time
(user + system, workers included) are measured around that process.

    .venv/bin/python benchmarks/convert_real_layouts.py [--no-real-dsb2018] [--out benchmarks/results/convert_real_layouts.md]
"""  # noqa: E501 (the usage line above is quoted whole)

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
MIRROR = "file://../shared/data/dsb2018/stage1_train.zip"


def cases(real_dsb2018: bool) -> list[tuple[str, dict]]:
    hela, psc = str(DATA / "ctc" / "Fluo-N2DL-HeLa.zip"), str(DATA / "ctc" / "PhC-C2DL-PSC.zip")
    out = [(f"ctc Fluo-N2DL-HeLa, truth {t}", {"source": "ctc", "options": {"name": "Fluo-N2DL-HeLa",
                                                                           "archive": hela, "truth": t}})
           for t in ("silver", "gold", "both")]
    out.append(("ctc PhC-C2DL-PSC, truth both",
                {"source": "ctc", "options": {"name": "PhC-C2DL-PSC", "archive": psc, "truth": "both"}}))
    out.append(("lsc CVPPP2017_LSC_training.zip",
                {"source": "lsc", "options": {"archive": str(DATA / "lsc" / "CVPPP2017_LSC_training.zip")}}))
    out.append(("dsb2018 dsb2018_mini.zip", {"source": "dsb2018",
                                             "options": {"url": (DATA / "dsb2018_mini.zip").as_uri(), "size": 0}}))
    if real_dsb2018:
        out.append(("dsb2018 stage1_train.zip (real, mirror)", {"source": "dsb2018", "options": {"url": MIRROR}}))
    return out


def run(argv: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child processes, stderr) of one CLI process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-P", "-m", "objguided", *argv], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stderr


def convert_one(label: str, spec: dict, work: Path) -> dict:
    out, raw = work / "data", work / "raw"
    argv = ["convert", "--spec", json.dumps(spec), "--out", str(out)]
    if spec["source"] == "dsb2018":
        run(["fetch", "--spec", json.dumps(spec), "--raw", str(raw)])
        argv += ["--raw", str(raw)]
    wall, cpu, stderr = run(argv)
    manifest = json.loads((out / "manifest.json").read_text())
    written = len(list((out / "images").glob("*.png")))
    warnings = [line.split("WARNING", 1)[-1].strip(" :") for line in stderr.splitlines() if "WARNING" in line]
    return {"label": label, "argv": argv, "wall": wall, "cpu": cpu, "images": manifest["images"],
            "written": written, "objects": manifest["objects"], "detail": detail(manifest), "warnings": warnings}


def detail(m: dict) -> str:
    if m["source"] == "ctc":
        return (f"truth {m['truth_counts']}; partial {m['partial_truth']['images']} "
                f"(missing cells {sum(m['partial_truth']['missing_objects'].values())}); markers {len(m['markers'])}; "
                f"gold over silver {m['gold_over_silver']['images']} ({len(m['gold_over_silver']['partial'])} partial)")
    if m["source"] == "lsc":
        return f"subsets {m['subsets']}; short of the card: {', '.join(m['subsets_short']) or 'none'}"
    return f"set {m['set']}"


def markdown(rows: list[dict]) -> str:
    load = os.getloadavg()[0]
    lines = [
        "# `objguided convert` on each real archive layout",
        "",
        f"Made by `benchmarks/convert_real_layouts.py` on {datetime.date.today()}; each conversion is its own "
        "`python -P -m objguided convert` process run from the repository root (DSB2018: after `objguided fetch`).",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average {load:.2f} at the end: "
        "**shared with other engineers' jobs**, so wall times are an upper bound.",
        "",
        "CTC and LSC run on the miniatures in tests/data (real names, folders and compression; 48x64 frames, "
        "24x32 plants): their times measure the per-process cost and the format handling, not a real set's size.",
        "",
        "| conversion | images (manifest / files) | objects | wall | CPU | what the manifest records |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['images']} / {r['written']} | {r['objects']:,} | {r['wall']:.1f} s | "
                     f"{r['cpu']:.1f} s | {r['detail']} |")
    lines += ["", "Printed warnings:", ""]
    lines += [f"- {r['label']}: {w}" for r in rows for w in r["warnings"]] or ["- none"]
    lines += ["", "Commands (the spec as passed):", ""]
    lines += [f"- `objguided {' '.join(a if ' ' not in a else repr(a) for a in r['argv'])}`" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-real-dsb2018", action="store_true", help="skip the 670-image stage1_train")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "convert_real_layouts.md")
    args = parser.parse_args()
    rows = []
    for label, spec in cases(not args.no_real_dsb2018):
        with tempfile.TemporaryDirectory(prefix="convert-bench-") as work:
            rows.append(convert_one(label, spec, Path(work)))
            print(f"{label}: {rows[-1]['images']} images in {rows[-1]['wall']:.1f} s", flush=True)
    args.out.write_text(markdown(rows))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
