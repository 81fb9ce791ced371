# Config loading and the helpers every rule file uses.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.settings.types import DeploymentMethod

import objguided_methods as methods
from objguided.config import configfiles_on_command_line, runs, validate_config
from objguided.data.sources import unavailable_reason
from objguided.engine.guard import job_environment
from objguided.errors import ConfigError

# Exactly one config file: Snakemake merges the files of one --configfile and silently keeps only the last of a
# repeated one; either way the run would be neither file's. (The profile's configfile is replaced, not merged.)
_files = list(dict.fromkeys(configfiles_on_command_line(sys.argv)))
if len(_files) < 2:
    _files = list(dict.fromkeys(str(f) for f in workflow.overwrite_configfiles))
if len(_files) > 1:
    raise ConfigError(
        f"{len(_files)} config files given ({', '.join(_files)}): pass exactly one --configfile. Snakemake would "
        "merge them, or keep only the last of a repeated --configfile; put what you need into one file"
    )
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

# Rules call the CLI of the interpreter that runs Snakemake, so a job needs no activated environment. -P keeps
# the job's working folder off sys.path (under --directory it may hold another checkout's objguided).
OBJGUIDED = f"{shlex.quote(sys.executable)} -P -m objguided"
# Inherited by every job (and set anew by the Snakemake that runs a cluster job on its node), not params, so
# that they do not trigger reruns: the CLI refuses to run code from anywhere but this workflow's checkout,
# and stops when the Snakemake that started it is gone (objguided.engine.guard).
os.environ.update(job_environment(workflow.basedir))
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


# ---- the software environment and what each job asks a cluster for (README, "On a SLURM cluster") ----
# --use-conda: every job runs in the environment of environment.yml, which Snakemake creates under .snakemake/conda,
# and calls that environment's own python. Snakemake creates it from a copy of the file in that folder, where the
# file's `-e .` would name the wrong folder: the copy it is given (conda_env_file) names this checkout by its
# absolute path instead. Without --use-conda, jobs call the interpreter that runs Snakemake (OBJGUIDED).
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
CLI = "python -P -m objguided" if USE_CONDA else OBJGUIDED


def conda_env_file(checkout=workflow.basedir, folder=".snakemake/objguided"):
    """The conda: file of every rule: environment.yml itself, or with --use-conda a copy in ``folder`` whose
    `-e .` names ``checkout``'s absolute path (written only when it changes, so parallel writers agree)."""
    source = Path(checkout) / "environment.yml"
    if not USE_CONDA:
        return str(source)  # never created; Snakemake only records its text
    text, n = re.subn(r"(?m)^(\s*-\s+-e\s+)\.(?=\s|$)", lambda m: m.group(1) + str(Path(checkout).resolve()),
                      source.read_text())
    if n != 1:
        raise ValueError(f"{source}: expected one `- -e .` line installing the checkout, found {n}")
    target = Path(folder).resolve() / "environment.yml"
    if not target.exists() or target.read_text() != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".environment.{os.getpid()}.yml")
        tmp.write_text(text)
        os.replace(tmp, target)
    return str(target)


CONDA_ENV_FILE = conda_env_file()

#: CPUs of a scorer job: `objguided score` runs that many worker processes (OMP_NUM_THREADS, which Snakemake sets
#: to a job's threads), and of a convert job (a DSB2018 conversion uses every CPU the job may use)
SCORE_THREADS = 4
CONVERT_THREADS = 4


def loader_threads(wildcards):
    """CPUs of a train/predict job: its data loaders' worker processes (the run's num_workers) plus the main one."""
    cfg = methods.get(wildcards.method).make_config(run_of(wildcards)["params"])
    return 1 + int(getattr(cfg, "num_workers", 0) or 0)


def gpu_or_cpu(gpu_value, cpu_value):
    """A resource that depends on whether the job's method runs on a GPU (train/predict of a uses_gpu method)."""
    return lambda wildcards: gpu_value if gpus_for(wildcards) else cpu_value


def report_outputs():
    """report_targets(), the viewable ones flagged for Snakemake's own report (by kind, then by dataset)."""
    outputs = []
    for path in report_targets():
        name = os.path.basename(path)
        stem, ext = os.path.splitext(name)
        if ext in (".pdf", ".md", ".tex"):  # the same content as a PNG / CSV beside it
            outputs.append(path)
            continue
        kind = ("Tables" if ext in (".csv", ".html") and name != "report.html"
                else "Reproduction report" if name == "report.html" else "Figures")
        prefix = next((p for p in ("fig4_", "errors_", "loss_curves_") if stem.startswith(p)), None)
        dataset = stem.removeprefix(prefix) if prefix else "all datasets"
        outputs.append(report(path, category=kind, subcategory=dataset, labels={"file": name}))
    return outputs
