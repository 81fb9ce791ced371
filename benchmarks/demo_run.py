"""Wall time, peak memory, load and disk use of the demo DAG, from nothing (fresh working folder) to the report.

    nice -n 10 .venv/bin/python benchmarks/demo_run.py              # records benchmarks/results/demo_run.{json,md}
    nice -n 10 .venv/bin/python benchmarks/demo_run.py --config config/demo-seeds.yaml   # demo_run_seeds.*
                                                       # (..._peers.* in an environment with the peers extra)

Runs exactly what `make demo` runs (snakemake --cores all on the config) in a temporary working folder, so the
repository's own results are left alone. Memory is the peak over time of the summed resident set of Snakemake
and all its jobs, sampled every 0.2 s. The machine's load average (before and after) is recorded beside the
time: on a shared machine the wall time is inflated by the other jobs. Disk: what ``results/`` holds at the end,
and how much of it is checkpoints. Also: which learned methods scored 0 APseg on some dataset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results"


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def disk_use(results: Path) -> dict:
    """MiB in ``results`` and in its checkpoints (checkpoint*.pt) and model files."""
    files = [p for p in results.rglob("*") if p.is_file()]
    mib = lambda paths: round(sum(p.stat().st_size for p in paths) / 2**20, 1)  # noqa: E731
    return {"results_mib": mib(files), "checkpoints_mib": mib([p for p in files if p.name.startswith("checkpoint")]),
            "models_mib": mib([p for p in files if p.name == "model.pt"]),
            "checkpoints": sum(p.name == "checkpoint.pt" for p in files)}


def zero_rows(table1: Path) -> list[str]:
    """``dataset/label`` of the Table I rows of a learned method (not watershed) with APseg 0."""
    df = pd.read_csv(table1)
    zero = df[(df["method"] != "watershed") & ~(df["ap_seg"] > 0)]
    return [f"{d}/{lab}" for d, lab in zip(zero["dataset"], zero["label"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "demo.yaml")
    args = parser.parse_args(argv)
    config = args.config.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="objguided-demo-"))
    import objguided_methods as methods  # which optional methods this environment can run (the DAG leaves the others out)

    peers = all(methods.get(name).unavailable() is None for name in ("cellpose", "stardist"))
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "all",
           "--configfile", str(config)]
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / "snakemake.log", "w"))
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()
    if proc.returncode != 0:
        print(f"demo failed, see {workdir / 'snakemake.log'}", file=sys.stderr)
        return 1
    again = subprocess.run(cmd + ["-n"], capture_output=True, text=True)
    report = workdir / "results" / "report"
    table = (report / "table1.md").read_text()
    result = {
        "date": dt.date.today().isoformat(), "command": " ".join(cmd[0:1] + cmd[5:]),
        "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
        "peers_installed": peers,
        "wall_seconds": round(wall, 1), "peak_rss_mib": round(peak / 2**20, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "second_run_nothing_to_do": "Nothing to be done" in again.stdout + again.stderr,
        **disk_use(workdir / "results"), "learned_rows_with_zero_apseg": zero_rows(report / "table1.csv"),
        "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    name = "demo_run" + ("_seeds" if config.stem == "demo-seeds" else "") + ("_peers" if peers else "")
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (OUT / f"{name}.md").write_text(
        f"# Demo run ({result['config']}){' with the peers extra (Cellpose, StarDist)' if peers else ''}: wall time, "
        "memory, disk\n\n"
        f"Measured {result['date']} on {result['cpus']} CPU cores ({result['machine']}), no GPU, with\n"
        f"`nice -n 10 .venv/bin/python benchmarks/demo_run.py --config {result['config']}` (the demo DAG from an empty "
        f"working folder, environment already built{', with the peers extra: make env PEERS=1' if peers else ''}).\n"
        f"Load average (1, 5, 15 min) before: {result['load_average_before']}, after: {result['load_average_after']}; "
        f"on a machine shared with other jobs (load above {result['cpus']}) the wall time is inflated by them.\n\n"
        "| wall time | peak memory (Snakemake + jobs, summed RSS) | results/ on disk | of which checkpoints | second run |\n"
        "| --- | --- | --- | --- | --- |\n"
        f"| {result['wall_seconds']} s | {result['peak_rss_mib']} MiB | {result['results_mib']} MiB | "
        f"{result['checkpoints_mib']} MiB ({result['checkpoints']} files) | "
        f"{'nothing to do' if result['second_run_nothing_to_do'] else 'REBUILT SOMETHING'} |\n\n"
        "Learned methods with APseg 0 on a set: "
        f"{', '.join(result['learned_rows_with_zero_apseg']) or 'none'}.\n\n"
        f"The report it wrote:\n\n{table}\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
