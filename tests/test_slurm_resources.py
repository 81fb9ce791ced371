"""What the DAG asks a cluster for, checked without one (issue 18): only GPU jobs ask for a GPU (and so for the
gpu partition), every job's threads are what its program uses, the profile needs no accounting database, and
--use-conda runs the jobs with the environment's own python, the checkout installed by its absolute path.
tests/test_slurm.py runs the same through a real cluster."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import objguided_methods as methods
from objguided.config import runs, validate_config

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
#: memory (MB) per rule; train/predict: (GPU method, CPU method)
MEM_MB = {"convert": 8000, "train": (32000, 8000), "predict": (16000, 4000), "score": 4000, "report": 8000}
THREADS = {"fetch": 1, "convert": 4, "split": 1, "score": 4, "report": 1}


def plan(snakemake_cmd, *args, cwd=REPO, env=None) -> str:
    result = subprocess.run(snakemake_cmd + ["-n", "--forceall", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr


def jobs_of(output: str) -> list[dict]:
    """The dry run's job blocks: rule, wildcards, threads, resources."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", output):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head or head.group(1) == "all":
            continue
        field = lambda name: (re.search(rf"^\s+{name}: (.*)$", block, re.M) or [None, ""])[1]  # noqa: E731
        wildcards = dict(kv.split("=", 1) for kv in field("wildcards").split(", ") if kv)
        resources = dict(kv.split("=", 1) for kv in field("resources").split(", ") if kv)
        jobs.append({"rule": head.group(1), "wildcards": wildcards, "threads": int(field("threads") or 1),
                     "resources": resources})
    return jobs


def test_only_gpu_jobs_ask_for_a_gpu_and_threads_match_what_the_jobs_use(snakemake_cmd):
    config_path = REPO / "config" / "paper.yaml"
    jobs = jobs_of(plan(snakemake_cmd, "--cores", "64", "--configfile", str(config_path)))
    assert {job["rule"] for job in jobs} >= {"convert", "split", "train", "predict", "score", "report"}
    config = yaml.safe_load(config_path.read_text())
    validate_config(config)  # fills in the schema's defaults
    params = {(r["dataset"], r["method"], r["variant"], str(r["seed"])): r["params"] for r in runs(config)}
    seen_gpu = seen_cpu_method = False
    for job in jobs:
        rule, wc, res = job["rule"], job["wildcards"], job["resources"]
        if rule in ("train", "predict"):
            method = methods.get(wc["method"])
            assert res["gpu"] == ("1" if method.uses_gpu else "0"), job
            assert res["mem_mb"] == str(MEM_MB[rule][0 if method.uses_gpu else 1]), job
            cfg = method.make_config(params[(wc["dataset"], wc["method"], wc["variant"], wc["seed"])])
            assert job["threads"] == 1 + getattr(cfg, "num_workers", 0), job  # the loader's workers + the main one
            seen_gpu |= method.uses_gpu
            seen_cpu_method |= not method.uses_gpu
        else:
            assert res.get("gpu", "0") == "0", job
            assert job["threads"] == THREADS[rule], job
            if rule in MEM_MB:
                assert res["mem_mb"] == str(MEM_MB[rule]) and "runtime" in res, job
    assert seen_gpu and seen_cpu_method


def test_the_profile_routes_gpu_jobs_to_the_gpu_partition_and_needs_no_accounting():
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"  # sacct needs slurmdbd
    # no profile-wide partition, CPUs or memory: they would send every job to one partition at one size
    assert not {"slurm_partition", "cpus_per_task", "mem_mb"} & set(profile.get("default-resources") or {})
    partitions = read_partition_file(PROFILE / profile["slurm-partition-config"])
    logger = SimpleNamespace(info=lambda *a: None, debug=lambda *a: None, warning=lambda *a: None)

    def job(**resources):
        return SimpleNamespace(name="job", threads=resources.pop("threads", 1), resources=resources)

    assert get_best_partition(partitions, job(gpu=1, mem_mb=32000, runtime=1440, threads=5), logger) == "gpu"
    for resources in ({"gpu": 0, "mem_mb": 8000}, {"mem_mb": 4000, "threads": 4}, {"mem_mb": 8000}):
        assert get_best_partition(partitions, job(**resources), logger) == "cpu"


def test_the_slurm_profile_plans_with_the_installed_plugin(snakemake_cmd, tmp_path):
    """`make env` installs the executor plugin: the profile plans instead of saying `invalid choice: 'slurm'`."""
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    out = plan(snakemake_cmd, "--profile", str(PROFILE), "--configfile", str(REPO / "config" / "test.yaml"),
               "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), cwd=tmp_path, env=env)
    assert "invalid choice" not in out and "report" in out


FAKE_CONDA = """#!/bin/sh
# just enough conda for Snakemake's dry run: it asks for the version, the platform and the channel priority
case "$*" in
  "info --json") echo '{"conda_prefix": "/nonexistent/conda", "platform": "linux-64"}' ;;
  "--version") echo "conda 24.11.0" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}' ;;
  *) echo "fake conda cannot: $*" >&2; exit 1 ;;
esac
"""


def test_use_conda_runs_the_environments_python_with_this_checkout_installed(snakemake_cmd, tmp_path):
    conda_bin = tmp_path / "conda-bin"
    conda_bin.mkdir()
    (conda_bin / "conda").write_text(FAKE_CONDA)
    (conda_bin / "conda").chmod(0o755)
    env = {**os.environ, "PATH": f"{conda_bin}:{os.environ['PATH']}"}
    common = ["-p", "--configfile", str(REPO / "config" / "test.yaml"), "-s", str(REPO / "Snakefile"),
              "--directory", str(tmp_path)]

    with_conda = plan(snakemake_cmd, "--use-conda", *common, cwd=tmp_path, env=env)
    commands = re.findall(r"^Shell command: (.*-m objguided (?:convert|split|train|predict|score|report)\b)",
                          with_conda, re.M)
    assert commands and all(c.startswith("python -P -m objguided") for c in commands), commands[:3]
    env_file = tmp_path / ".snakemake" / "objguided" / "environment.yml"
    pip = yaml.safe_load(env_file.read_text())["dependencies"][-1]["pip"]
    assert f"-e {REPO}" in pip and "-e ." not in pip  # Snakemake builds from a copy elsewhere: `.` would miss
    assert "Conda environment .snakemake/objguided/environment.yml will be created" in with_conda  # every rule's

    without = plan(snakemake_cmd, *common, cwd=tmp_path, env=env)
    commands = re.findall(r"^Shell command: (.*-m objguided (?:convert|train|score)\b)", without, re.M)
    assert commands and all(c.startswith(f"{shlex.quote(sys.executable)} -P -m objguided") for c in commands)


@pytest.mark.parametrize("rule_file", ["data.smk", "train.smk", "evaluate.smk", "report.smk"])
def test_every_rule_declares_threads(rule_file):
    text = (REPO / "workflow" / "rules" / rule_file).read_text()
    rules = re.findall(r"^rule (\w+):\n((?:\s+.*\n|\n)*)", text, re.M)
    assert rules
    for name, body in rules:
        assert re.search(r"^    threads: ", body, re.M), f"rule {name} declares no threads"
    if rule_file == "train.smk":
        assert re.search(r"^    retries: [1-9]", text, re.M)  # a failed training resumes from its checkpoint
