# objguided: the paper's Table I / Figure 5 as one DAG.
#   snakemake --cores all                              # the demo (profiles/default loads config/demo.yaml)
#   snakemake --cores all --resources gpu=4 --configfile config/paper.yaml
from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Run beside Snakemake, never submitted to a cluster: the target rule, downloads (compute nodes often have no
# network) and the one-second split. Every other job goes through the executor (profiles/slurm).
localrules:
    all,
    fetch,
    split,


rule all:
    input:
        report_targets(),
    default_target: True
