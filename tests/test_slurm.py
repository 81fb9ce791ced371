"""The cluster path for real (issue 18): config/test.yaml plus one tiny learned method through
`snakemake --profile profiles/slurm` on a one-node SLURM cluster (scripts/slurm_cluster.sh) to the report.

Jobs go through sbatch (a wrapper on PATH records each call, then runs the real sbatch, which runs the job),
at least two run at once (SLURM's own start and end times), and what SLURM was asked for (partition, CPUs,
memory, time limit, GPUs) is each rule's resource class: only train/predict of the GPU method ask for a GPU
and the gpu partition. GPU jobs that run at once hold different GPUs of the node (scontrol, while they run).

Needs Debian's slurm-wlm and munge, and root; skipped without them, except in CI (CI=true), where .ci/run
installs them and this test must run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
OURS_TINY = {"backbone": "resnet18", "pretrained": None, "input_size": 64, "batch_size": 2, "max_steps": 4,
             "num_workers": 0, "head_width": 16, "checkpoint_min_seconds": 0.0, "score_threshold": 0.01}
#: what each submitted job must ask SLURM for: (CPUs, memory MB, time limit, GPU job); train/predict by method
EXPECTED = {
    "convert": (4, 8000, "02:00:00", False),
    "train/watershed": (1, 8000, "1-00:00:00", False),
    "train/objguided": (1, 32000, "1-00:00:00", True),  # 1 CPU: num_workers 0, so its loader has no workers
    "predict/watershed": (1, 4000, "04:00:00", False),
    "predict/objguided": (1, 16000, "04:00:00", True),
    "score": (4, 4000, "02:00:00", False),
    "report": (1, 8000, "02:00:00", False),
}
LOCAL_RULES = {"split", "fetch", "all"}

SBATCH_WRAPPER = """#!{python}
# Records what sbatch was asked, then runs the real sbatch (which runs the job) and passes its answer on.
import json, subprocess, sys
done = subprocess.run([{sbatch!r}, *sys.argv[1:]], capture_output=True, text=True)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "rc": done.returncode, "out": done.stdout}}) + "\\n")
sys.stdout.write(done.stdout)
sys.stderr.write(done.stderr)
sys.exit(done.returncode)
"""


def slurm_or_skip():
    missing = [name for name in ("slurmctld", "slurmd", "munged", "sbatch") if not shutil.which(name)]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SLURM test, but {', '.join(missing)} is missing (.ci/run installs them)")
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing: apt-get install -y slurm-wlm munge); "
                    "CI runs this test")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node cluster for this module: its environment (SLURM_CONF, PATH with the cluster's srun)."""
    slurm_or_skip()
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "OBJGUIDED_SLURM_DIR": str(folder / "cluster")}
    script = REPO / "scripts" / "slurm_cluster.sh"
    up = subprocess.run(["bash", str(script), "up"], env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, f"the cluster did not start:\n{up.stderr[-4000:]}"
    again = subprocess.run(["bash", str(script), "up"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == up.stdout  # idempotent: the running cluster, untouched
    exports = dict(re.findall(r"(\w+)=(\S+)", up.stdout))
    env["SLURM_CONF"] = exports["SLURM_CONF"]
    env["PATH"] = exports["PATH"].replace("$PATH", os.environ["PATH"])
    try:
        yield env
    finally:
        down = subprocess.run(["bash", str(script), "down"], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert not (folder / "cluster").exists()


class JobWatcher(threading.Thread):
    """Polls `scontrol -d -o show job` while the workflow runs: the GPU indices each running job holds."""

    def __init__(self, env):
        super().__init__(daemon=True)
        self.env, self.gpus, self.polls, self.stop = env, {}, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            out = subprocess.run(["scontrol", "-d", "-o", "show", "job"], env=self.env, capture_output=True,
                                 text=True).stdout
            self.polls += 1
            for line in out.splitlines():
                job, idx = re.search(r"JobId=(\d+)", line), re.search(r"GRES=gpu[^ ]*\(IDX:([0-9,-]+)\)", line)
                if job and idx and "JobState=RUNNING" in line:
                    self.gpus.setdefault(job.group(1), idx.group(1))
            self.stop.wait(0.5)


def scontrol_job(env, job_id: str) -> dict:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True,
                         check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def sbatch_args(argv: list[str]) -> str:
    """An sbatch call without the parts that vary by run (job name, log file, folder, the wrapped command)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--job-name", "--output", "-D", "--comment"):
            skip = True
        elif not arg.startswith("--wrap"):
            out.append(arg)
    return " ".join(out)


def rule_key(comment: str) -> str:
    """The plugin's --comment (rule_<rule>[_wildcards_<values>]) as a key of EXPECTED."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_(.*))?", comment)
    rule, wildcards = match.group(1), match.group(2) or ""
    if rule in ("train", "predict"):
        return f"{rule}/{'objguided' if '_objguided_' in wildcards else 'watershed'}"
    return rule


def test_test_config_runs_through_sbatch_to_the_report(cluster, snakemake_cmd, tmp_path):
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    config["methods"]["objguided"] = {"params": OURS_TINY, "variants": {"refine": {}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    shims, sbatch_log = tmp_path / "shims", tmp_path / "sbatch.jsonl"
    shims.mkdir()
    wrapper = shims / "sbatch"
    wrapper.write_text(SBATCH_WRAPPER.format(python=sys.executable, sbatch=shutil.which("sbatch", path=cluster["PATH"]),
                                             log=str(sbatch_log)))
    wrapper.chmod(0o755)
    env = {**cluster, "PATH": f"{shims}:{cluster['PATH']}"}

    cmd = snakemake_cmd + ["--profile", str(REPO / "profiles" / "slurm"), "-s", str(REPO / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
                           # poll often: the profile's waits suit a real cluster, not a test
                           "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
                           "--slurm-keep-successful-logs"]
    watcher = JobWatcher(env)
    watcher.start()
    started = time.monotonic()
    try:
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        watcher.stop.set()
        watcher.join(10)
    took = time.monotonic() - started
    logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}"
                     for p in sorted((tmp_path / ".snakemake").glob("slurm_logs/**/*.log")))
    assert run.returncode == 0, f"{run.stderr[-6000:]}\n{logs[-6000:]}"
    assert (tmp_path / "results" / "report" / "report.html").exists()

    # every job but the local rules went through sbatch, and SLURM ran each one to completion
    calls = [json.loads(line) for line in sbatch_log.read_text().splitlines()]
    jobs = {}
    for call in calls:
        assert call["rc"] == 0, call
        job_id = call["out"].strip().split(";")[0]
        jobs[job_id] = {"argv": call["argv"], "slurm": scontrol_job(env, job_id)}
    submitted = sorted(rule_key(job["slurm"]["Comment"]) for job in jobs.values())
    assert submitted == sorted(["convert"] * 2 + ["train/watershed", "train/objguided"] * 2
                               + ["predict/watershed", "predict/objguided"] * 2 + ["score"] * 4 + ["report"])
    assert not LOCAL_RULES & {key.split("/")[0] for key in submitted}
    for job_id, job in jobs.items():
        assert job["slurm"]["JobState"] == "COMPLETED", (job_id, job["slurm"])
        assert f"SLURM jobid {job_id} " in run.stderr  # Snakemake tracked this very job

    # what SLURM received is each rule's resource class
    lines = []
    for job_id, job in sorted(jobs.items(), key=lambda item: int(item[0])):
        key, slurm, argv = rule_key(job["slurm"]["Comment"]), job["slurm"], " ".join(job["argv"])
        cpus, mem_mb, limit, gpu = EXPECTED[key]
        assert slurm["Partition"] == ("gpu" if gpu else "cpu"), (key, slurm)
        assert slurm["NumCPUs"] == str(cpus) and f"--cpus-per-task={cpus}" in argv, (key, argv)
        assert f"mem={mem_mb}M" in slurm["TRES"] and f"--mem {mem_mb}" in argv, (key, slurm["TRES"], argv)
        assert slurm["TimeLimit"] == limit, (key, slurm["TimeLimit"])
        assert ("--gpus=1" in argv) == gpu and (slurm.get("TresPerJob") == "gres:gpu:1") == gpu, (key, argv)
        assert ("ntasks-per-gpu" in argv) is False  # one task per job: the command runs once, not once per GPU
        lines.append(f"{job_id:>3} {key:<18} {slurm['StartTime'][11:]}-{slurm['EndTime'][11:]} {slurm['JobState']} "
                     f"sbatch {sbatch_args(job['argv'])}")

    # at least two jobs ran at once (SLURM's start and end times, one-second resolution)
    spans = {job_id: (seconds(job["slurm"]["StartTime"]), seconds(job["slurm"]["EndTime"]))
             for job_id, job in jobs.items()}
    overlaps = [(a, b, min(spans[a][1], spans[b][1]) - max(spans[a][0], spans[b][0]))
                for a in spans for b in spans if int(a) < int(b)]
    overlaps = [o for o in overlaps if o[2] >= 2]
    assert overlaps, f"no two jobs ran at once: {spans}"

    # GPU jobs that ran at once held different GPUs of the node
    gpu_jobs = [job_id for job_id, job in jobs.items() if EXPECTED[rule_key(job["slurm"]["Comment"])][3]]
    assert watcher.polls > 10 and set(watcher.gpus) & set(gpu_jobs), (watcher.polls, watcher.gpus)
    for a, b, _ in overlaps:
        if a in watcher.gpus and b in watcher.gpus:
            assert watcher.gpus[a] != watcher.gpus[b], f"jobs {a} and {b} ran at once on GPU {watcher.gpus[a]}"

    summary = "\n".join(lines + [f"overlapping pairs (>= 2 s): {[(a, b, s) for a, b, s in overlaps]}",
                                 f"GPU indices while running: {watcher.gpus}",
                                 f"workflow through SLURM: {took:.0f} s"])
    (tmp_path / "slurm_summary.txt").write_text(summary)
    print(summary)
