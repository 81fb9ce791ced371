# Config loading and the helpers every rule file uses.
import json
import os
import sys
from pathlib import Path

from snakemake.logging import logger

import methods
from objguided.config import runs, validate_config
from objguided.data.sources import unavailable_reason

if not config:
    raise ValueError(
        "no configuration: run with --configfile config/demo.yaml (profiles/default does this when "
        "snakemake runs from the repository root) or --configfile config/paper.yaml"
    )
validate_config(config)

# Datasets whose data the user must supply and has not: leave them out, say so, run the others.
for _name, _dataset in list(config["datasets"].items()):
    _why = unavailable_reason(_dataset["source"], _dataset["options"])
    if _why:
        logger.warning(f"dataset '{_name}' is left out of this run: {_why}")
        del config["datasets"][_name]
if not config["datasets"]:
    raise ValueError("no dataset of the config is available; see the warnings above")

# Methods over an optional package that is not installed (the `peers` extra): likewise left out.
for _name in list(config["methods"]):
    _unavailable = methods.get(_name).unavailable
    _why = _unavailable() if _unavailable else None
    if _why:
        logger.warning(f"method '{_name}' is left out of this run: {_why}")
        del config["methods"][_name]
if not config["methods"]:
    raise ValueError("no method of the config can run here; see the warnings above")

# Rules call the CLI of the interpreter that runs Snakemake, so a job needs no activated environment.
OBJGUIDED = f"{sys.executable} -m objguided"
# With --use-conda, jobs run in this environment instead (it installs the repository itself).
ENV_FILE = "../../environment.yml"
RUNS = runs(config)
RUN_DIR = "results/{dataset}/{method}/{variant}/seed{seed}"
DATA_DIR = "resources/data/{dataset}"
REPORT_DIR = "results/report"
# Relative to the repository, so the workflow also runs with --directory elsewhere.
PAPER_TABLE1 = str(Path(workflow.basedir) / config["report"]["paper_table1"])


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    method="[A-Za-z0-9_]+",
    variant="[A-Za-z0-9_.-]+",
    seed="[0-9]+",


def as_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def dataset_spec(wildcards):
    spec = config["datasets"][wildcards.dataset]
    url = spec["options"].get("url", "")
    local = url.removeprefix("file://")
    if url.startswith("file://") and not (os.path.isabs(local) or local.startswith(("localhost", "~", "$"))):
        # a relative file:// URL names a path relative to the repository, as split folders do
        spec = spec | {"options": spec["options"] | {"url": f"file://{Path(workflow.basedir) / local}"}}
    return as_json(spec)


def split_spec(wildcards):
    split = dict(config["datasets"][wildcards.dataset]["split"])
    if "folder" in split:  # published split lists live in the repository (datasets/<name>/split)
        split["folder"] = str(Path(workflow.basedir) / split["folder"])
    return as_json(split)


def run_of(wildcards):
    for run in RUNS:
        if (run["dataset"], run["method"], run["variant"], str(run["seed"])) == (
            wildcards.dataset,
            wildcards.method,
            wildcards.variant,
            str(wildcards.seed),
        ):
            return run
    raise ValueError(f"no run {dict(wildcards)} in the config")


def run_params(wildcards):
    return as_json(run_of(wildcards)["params"])


def score_options(wildcards):
    evaluation = run_of(wildcards)["evaluation"]
    options = f"--box-convention {evaluation['box_convention']} --mask-iou {evaluation['mask_iou']}"
    return options + ("" if evaluation["extras"] else " --no-extras")


def gpus_for(wildcards):
    return 1 if methods.get(wildcards.method).uses_gpu else 0


def run_dirs():
    return [RUN_DIR.format(**run) for run in RUNS]


def report_targets():
    from objguided.report.build import report_files

    return [f"{REPORT_DIR}/{name}" for name in report_files(list(config["datasets"]))]


RAW_DIR = "resources/raw/{dataset}"


def needs_fetch(wildcards):
    from objguided.data.sources import get_source

    return get_source(config["datasets"][wildcards.dataset]["source"]).fetch is not None


def report_spec():
    runs = [
        {key: run[key] for key in ("dataset", "method", "variant", "seed", "label", "paper_dataset", "paper_method")}
        | {"dir": RUN_DIR.format(**run), "params": run["params"]}
        for run in RUNS
    ]
    datasets = {
        name: {
            "dir": DATA_DIR.format(dataset=name),
            "split": f"{DATA_DIR}/split.json".format(dataset=name),
            "subset": config["evaluation"]["subset"],
        }
        for name in config["datasets"]
    }
    return {
        "runs": runs,
        "datasets": datasets,
        "paper_table1": PAPER_TABLE1,
        # Table II of the paper sits beside Table I (results/paper/); the config names only Table I
        "paper_table2": str(Path(PAPER_TABLE1).with_name("table2.csv")),
        "note": config["report"]["note"],
    }
