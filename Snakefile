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


rule all:
    input:
        report_targets(),
    default_target: True
