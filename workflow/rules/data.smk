# Data: (fetch: raw archive, verified) -> convert: canonical folder (images/, labels/, manifest.json)
# -> split: split.json. Sources without a fetch step (synthetic) go straight to convert.

rule fetch:
    conda:
        ENV_FILE
    output:
        f"{RAW_DIR}/fetched.json",
    params:
        cli=OBJGUIDED,
        spec=dataset_spec,
        raw=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "results/logs/fetch/{dataset}.log",
    shell:
        "{params.cli} fetch --spec {params.spec:q} --raw {params.raw} 2> {log}"


rule convert:
    conda:
        ENV_FILE
    input:
        lambda wildcards: [f"{RAW_DIR}/fetched.json".format(**wildcards)] if needs_fetch(wildcards) else [],
    output:
        f"{DATA_DIR}/manifest.json",
    params:
        cli=OBJGUIDED,
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
        ENV_FILE
    input:
        f"{DATA_DIR}/manifest.json",
    output:
        f"{DATA_DIR}/split.json",
    params:
        cli=OBJGUIDED,
        spec=split_spec,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
    log:
        "results/logs/split/{dataset}.log",
    shell:
        "{params.cli} split --data {params.data} --spec {params.spec:q} --out {output} 2> {log}"
