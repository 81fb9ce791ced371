"""Table I at equal compute on a CPU, and AP against compute (issue #23).

Runs the workflow on ``config/cpu-dsb2018.yaml`` (real DSB2018, the paper's split, every Table I method and
watershed) once per rung of a ladder of compute budgets: each rung rewrites every learned method's
``budget_seconds`` and runs Snakemake again. The shared trainer resumes each run from its checkpoint with the
larger budget (``budget_seconds`` is a resumable change), so rung k+1 continues rung k's runs; predict,
score and report run again for the new weights. After each rung the script records, per method, the
metrics, the steps reached and the compute used (from the model files), the machine's load and the rung's
Table I and Figure 5 (``cpu_dsb2018_budget<s>_{table1.md,fig5.png}``); at the end it writes ``cpu_dsb2018.md``,
``cpu_dsb2018.json``, ``cpu_dsb2018_ap_vs_compute.png``
(objguided.report.compute) and ``cpu_dsb2018_losses.png`` into ``--out``.

Usage (from the checkout; one torch thread per job, two jobs at a time)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/cpu_dsb2018.py --budgets 120,240,480 \\
        [--cores 2] [--config config/cpu-dsb2018.yaml] [--out benchmarks/results]

A rung already recorded in ``--out``/cpu_dsb2018.json is not run again (``--redo`` runs it); ``--render``
only rebuilds the .md and figures from the JSON.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = "dsb2018"


def rung_config(base: dict, budget: float) -> dict:
    """``base`` with every learned method's ``budget_seconds`` set to ``budget``."""
    config = json.loads(json.dumps(base))
    for name, method in config["methods"].items():
        if "budget_seconds" in method.get("params", {}):
            method["params"]["budget_seconds"] = float(budget)
    return config


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_record(run_dir: Path) -> dict:
    """What a rung keeps of one run: metrics, speed, and the model file's training fields."""
    import torch

    if not (run_dir / "metrics.json").is_file():  # --partial: a run the deadline stopped
        progress = run_dir / "train_progress.json"
        return {"unfinished": True, **(json.loads(progress.read_text()) if progress.is_file() else {})}
    model = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    speed_path = run_dir / "speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.is_file() else {}
    keep = ("train_seconds", "train_steps", "train_epochs", "train_compute_seconds", "train_compute_clock",
            "train_budget_seconds", "resumed_from_step")
    return {"ap_seg": metrics["ap_seg_mean"], "ap_dec": metrics["ap_dec_mean"], "ap_seg_50": metrics["ap_seg_50"],
            "ap_seg_75": metrics["ap_seg_75"], "fps": speed.get("fps"),
            **{k: model.get(k) for k in keep}}


def run_rung(config: dict, budget: float, cores: int, work: Path, snapshots: Path, extra: list[str],
             partial: str | None = None) -> dict:
    """Run one rung and record it; ``partial`` (a reason): record the runs as they stand, without Snakemake."""
    path = work / f"cpu-dsb2018-budget{int(budget)}.yaml"
    if partial is None:
        path.write_text(yaml.safe_dump(rung_config(config, budget), sort_keys=False))
    load_before, cpu_before = os.getloadavg(), children_cpu()
    cmd = [str(REPO / ".venv/bin/snakemake"), "--cores", str(cores), "--configfile", str(path), *extra]
    log = work / f"snakemake-budget{int(budget)}.log"
    if partial is None:
        with log.open("w") as f:
            subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True)
    rung = {"budget_seconds": budget, "partial": partial,
            "wall_seconds": time.time() - path.stat().st_mtime,  # since the rung's config was written
            "cpu_seconds_all_jobs": None if partial else children_cpu() - cpu_before, "load_before": load_before,
            "load_after": os.getloadavg(), "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "runs": {}}
    for name, method in config["methods"].items():
        for variant, spec in method["variants"].items():
            run_dir = REPO / "results" / DATASET / name / variant / "seed0"
            rung["runs"][f"{name}/{variant}"] = {"label": spec.get("label", name),
                                                 "paper_method": spec.get("paper_method"), **run_record(run_dir)}
    for src in ("table1.md", "fig5.png") if partial is None else ():
        shutil.copy(REPO / "results/report" / src, snapshots / f"cpu_dsb2018_budget{int(budget)}_{src}")
    return rung


def losses_figure(config: dict, out: Path) -> None:
    """Every learned method's total loss against its steps (the last rung's losses.csv holds the whole run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {spec.get("label", name): REPO / "results" / DATASET / name / variant / "seed0" / "losses.csv"
            for name, method in config["methods"].items() for variant, spec in method["variants"].items()}
    logs = {label: path for label, path in logs.items() if path.is_file()}
    if not logs:  # --render away from the checkout that ran the ladder
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, path in logs.items():
        rows = list(csv.DictReader(path.open()))
        ax.plot([int(r["step"]) for r in rows], [float(r["total"]) for r in rows], "o-", ms=3, label=label)
    ax.set(xlabel="optimizer step", ylabel="total training loss (each method's own loss)", yscale="log",
           title="Training loss, DSB2018, CPU-scale models")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def fmt(value, pattern: str = "{:.1f}") -> str:
    return "" if value is None else pattern.format(value)


def rung_table(rung: dict) -> list[str]:
    done = {k: r for k, r in rung["runs"].items() if not r.get("unfinished")}
    rows = sorted(done.items(), key=lambda kv: -kv[1]["ap_seg"])
    lines = ["| rank | method | compute used (CPU s) | steps | APseg | APdec | APseg@.5 | APseg@.75 | FPS (1 thread) |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, (key, run) in enumerate(rows, 1):
        lines.append(f"| {i} | {run['label']} | {fmt(run.get('train_compute_seconds'))} | {fmt(run.get('train_steps'), '{}')}"
                     f" | {100 * run['ap_seg']:.2f} | {100 * run['ap_dec']:.2f} | {fmt(100 * run['ap_seg_50'], '{:.2f}')}"
                     f" | {fmt(None if run['ap_seg_75'] is None else 100 * run['ap_seg_75'], '{:.2f}')}"
                     f" | {fmt(run.get('fps'), '{:.2f}')} |")
    for run in (r for r in rung["runs"].values() if r.get("unfinished")):
        lines.append(f"| | {run['label']} | {fmt(run.get('compute_seconds'))} | {fmt(run.get('steps'), '{}')}"
                     " | not finished | | | | |")
    return lines


def scored_split(config: dict) -> dict:
    """The split the runs were scored on: its folder and how many test images it holds."""
    split = json.loads((REPO / "resources/data" / DATASET / "split.json").read_text())
    return {"test_images": len(split["test"]), "split": config["datasets"][DATASET]["split"].get("folder")}


def render_md(record: dict, out: Path) -> None:
    """cpu_dsb2018.md from the record: one Table I per rung, and who passes whom at which budget."""
    from objguided.report.compute import first_rung_ahead

    lines = ["# Table I at equal compute on a CPU: real DSB2018 (issue #23)", "",
             f"Made by `benchmarks/cpu_dsb2018.py` (config `{record.get('config')}`); machine: {record.get('machine')};"
             f" OMP_NUM_THREADS={record.get('omp_num_threads')}, {record.get('cores')} Snakemake jobs at a time, nice 10,"
             " on a machine shared with other engineers' jobs (load averages below).", "",
             "Budget: process CPU time of each learned method's training steps (batch loading included; all threads of"
             " the process: 1 here), the same for every learned method, each rung resuming the previous rung's runs."
             " watershed has no training budget (its val grid search is not budgeted). APs in percent on the"
             f" {record['test_images']} test images of split `{record['split']}` (train 402 / val 134 as the paper's).",
             ""]
    for rung in record["rungs"]:
        lines += [f"## Budget {rung['budget_seconds']:g} CPU s per method ({rung['budget_seconds'] / 60:g} CPU min)", "",
                  (f"**Partial: {rung['partial']}.** " if rung.get("partial") else "")
                  + f"Rung recorded {rung['finished']}; wall {rung['wall_seconds'] / 60:.1f} min; CPU of all its jobs "
                  f"{fmt(rung['cpu_seconds_all_jobs'] and rung['cpu_seconds_all_jobs'] / 60, '{:.1f} min') or 'not measured (partial)'}; load average at "
                  "the start of the recording "
                  f"{' / '.join(f'{x:.1f}' for x in rung['load_before'])}, at its end "
                  f"{' / '.join(f'{x:.1f}' for x in rung['load_after'])}. Table I and Figure 5 of this rung: "
                  f"`cpu_dsb2018_budget{int(rung['budget_seconds'])}_table1.md`, "
                  f"`cpu_dsb2018_budget{int(rung['budget_seconds'])}_fig5.png`.", ""]
        lines += rung_table(rung) + [""]
    keys = record["rungs"][-1]["runs"]
    lines += ["## Where Ours passes Mask R-CNN and watershed", ""]
    for rival in ("mask_rcnn/default", "watershed/default"):
        if all("ap_seg" in keys.get(k, {}) for k in ("objguided/refine", rival)):
            at = first_rung_ahead(record, "objguided/refine", rival)
            lines.append(f"- Ours vs {keys[rival]['label']}: " + (
                f"ahead from the {at:g} CPU s rung on" if at is not None
                else "behind at every recorded budget (" + ", ".join(f"{r['budget_seconds']:g}" for r in record["rungs"])
                + " CPU s)"))
    lines += ["", "Figures: `cpu_dsb2018_ap_vs_compute.png` (AP against the compute used, the paper's GPU numbers beside it), "
              "`cpu_dsb2018_losses.png` (training loss against steps).", ""]
    (out / "cpu_dsb2018.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="120,240,480", help="CPU seconds per learned method, one per rung, ascending")
    p.add_argument("--config", type=Path, default=REPO / "config/cpu-dsb2018.yaml")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    p.add_argument("--redo", action="store_true")
    p.add_argument("--partial", help="record the runs of the (one) budget as they stand, saying why (a deadline)")
    p.add_argument("--snakemake-args", default="", help="more Snakemake options, e.g. '--rerun-triggers mtime'")
    p.add_argument("--render", action="store_true", help="only rebuild the .md and figures from the JSON")
    args = p.parse_args(argv)
    budgets = sorted(float(b) for b in args.budgets.split(","))
    config = yaml.safe_load(args.config.read_text())
    record_path = args.out / "cpu_dsb2018.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"rungs": []}
    work = REPO / "results" / "cpu_dsb2018"
    work.mkdir(parents=True, exist_ok=True)
    if not args.render:
        for budget in budgets:
            if not args.redo and any(r["budget_seconds"] == budget for r in record["rungs"]):
                continue
            rung = run_rung(config, budget, args.cores, work, args.out, shlex.split(args.snakemake_args),
                            args.partial)
            record["rungs"] = [r for r in record["rungs"] if r["budget_seconds"] != budget] + [rung]
            record["rungs"].sort(key=lambda r: r["budget_seconds"])
            record.update(machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                          omp_num_threads=os.environ.get("OMP_NUM_THREADS"), cores=args.cores,
                          config=str(args.config.relative_to(REPO)))
            record_path.write_text(json.dumps(record, indent=1))
            print(f"rung {budget:g} s done: {rung['wall_seconds']:.0f} s wall", flush=True)
    losses_figure(config, args.out / "cpu_dsb2018_losses.png")
    from objguided.report.compute import ap_vs_compute_figure, read_paper_points

    if "test_images" not in record:
        record.update(scored_split(config))
        record_path.write_text(json.dumps(record, indent=1))
    ap_vs_compute_figure(record, read_paper_points(REPO / "paper/table1.csv", DATASET), args.out / "cpu_dsb2018_ap_vs_compute.png",
                         title=f"APseg against training compute, DSB2018 test ({record['test_images']} images)")
    render_md(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
