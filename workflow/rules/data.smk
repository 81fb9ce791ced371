# Data: (fetch: raw archive, verified) -> convert: canonical folder (images/, labels/, manifest.json)
# -> split: split.json. Sources without a fetch step (synthetic) go straight to convert.
# fetch and split are local rules (Snakefile): on a cluster they run beside Snakemake (downloads need the
# login node's network; a split takes a second); convert is a CPU job.

rule fetch:
    conda:
        CONDA_ENV_FILE
    threads: 1
    output:
        f"{RAW_DIR}/fetched.json",
    params:
        cli=CLI,
        spec=dataset_spec,
        raw=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "results/logs/fetch/{dataset}.log",
    shell:
        "{params.cli} fetch --spec {params.spec:q} --raw {params.raw} 2> {log}"


rule convert:
    conda:
        CONDA_ENV_FILE
    threads: CONVERT_THREADS
    resources:
        mem_mb=8000,
        runtime=120,
    input:
        lambda wildcards: [f"{RAW_DIR}/fetched.json".format(**wildcards)] if needs_fetch(wildcards) else [],
    output:
        f"{DATA_DIR}/manifest.json",
    params:
        cli=CLI,
        spec=dataset_spec,
        raw=lambda wildcards: (
            f"--raw {RAW_DIR.format(dataset=wildcards.dataset)}" if needs_fetch(wildcards) else ""
        ),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "results/logs/convert/{dataset}.log",
    shell:
        "{params.cli} convert --spec {params.spec:q} {params.raw} --out {params.out} 2> {log}"


rule split:
    conda:
        CONDA_ENV_FILE
    threads: 1
    input:
        f"{DATA_DIR}/manifest.json",
    output:
        f"{DATA_DIR}/split.json",
    params:
        cli=CLI,
        spec=split_spec,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
    log:
        "results/logs/split/{dataset}.log",
    shell:
        "{params.cli} split --data {params.data} --spec {params.spec:q} --out {output} 2> {log}"
