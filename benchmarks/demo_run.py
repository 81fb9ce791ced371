"""Wall time and peak memory of the demo DAG, from nothing (fresh working folder) to the report.

    .venv/bin/python benchmarks/demo_run.py            # records benchmarks/results/demo_run.{json,md}
                                                       # (demo_run_peers.* in an environment with the peers extra)

Runs exactly what `make demo` runs (snakemake --cores all on config/demo.yaml) in a temporary working
folder, so the repository's own results are left alone. Memory is the peak over time of the summed
resident set of Snakemake and all its jobs, sampled every 0.2 s.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="objguided-demo-"))
    import methods  # which optional methods this environment can run (the DAG leaves the others out)

    peers = all(methods.get(name).unavailable() is None for name in ("cellpose", "stardist"))
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "all",
           "--configfile", str(REPO / "config" / "demo.yaml")]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / "snakemake.log", "w"))
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"demo failed, see {workdir / 'snakemake.log'}", file=sys.stderr)
        return 1
    again = subprocess.run(cmd + ["-n"], capture_output=True, text=True)
    table = (workdir / "results" / "report" / "table1.md").read_text()
    result = {
        "date": dt.date.today().isoformat(), "command": " ".join(cmd[0:1] + cmd[5:]),
        "peers_installed": peers,
        "wall_seconds": round(wall, 1), "peak_rss_mib": round(peak / 2**20, 1),
        "second_run_nothing_to_do": "Nothing to be done" in again.stdout + again.stderr,
        "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    name = "demo_run_peers" if peers else "demo_run"  # `make demo PEERS=1` adds Cellpose and StarDist
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (OUT / f"{name}.md").write_text(
        f"# Demo run{' with the peers extra (Cellpose, StarDist)' if peers else ''}: wall time and peak memory\n\n"
        f"Measured {result['date']} on {result['cpus']} CPU cores ({result['machine']}), no GPU, with\n"
        f"`.venv/bin/python benchmarks/demo_run.py` (the demo DAG from an empty working folder, environment "
        f"already built{', with the peers extra: make env PEERS=1' if peers else ''}).\n\n"
        f"| wall time | peak memory (Snakemake + jobs, summed RSS) | second run |\n| --- | --- | --- |\n"
        f"| {result['wall_seconds']} s | {result['peak_rss_mib']} MiB | "
        f"{'nothing to do' if result['second_run_nothing_to_do'] else 'REBUILT SOMETHING'} |\n\n"
        f"The report it wrote:\n\n{table}\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
