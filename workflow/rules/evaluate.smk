# Evaluation: predict the test subset, score it with the paper's AP protocol, time it (FPS).

EVAL = config["evaluation"]


rule predict:
    conda:
        ENV_FILE
    input:
        model=f"{RUN_DIR}/model.pt",
        split=f"{DATA_DIR}/split.json",
    output:
        f"{RUN_DIR}/predictions.json",
    params:
        cli=OBJGUIDED,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
        subset=EVAL["subset"],
        device=config["device"],
    resources:
        gpu=gpus_for,
    log:
        f"{RUN_DIR}/predict.log",
    shell:
        "{params.cli} predict --model {input.model} --data {params.data} --split {input.split}"
        " --subset {params.subset} --device {params.device} --out {output} 2> {log}"


rule score:
    conda:
        ENV_FILE
    input:
        pred=f"{RUN_DIR}/predictions.json",
        split=f"{DATA_DIR}/split.json",
    output:
        f"{RUN_DIR}/metrics.json",
    params:
        cli=OBJGUIDED,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
        subset=EVAL["subset"],
        options=score_options,
    log:
        f"{RUN_DIR}/score.log",
    shell:
        "{params.cli} score --gt {params.data} --pred {input.pred} --split {input.split}"
        " --subset {params.subset} {params.options} --out {output} 2> {log}"


rule time:
    conda:
        ENV_FILE
    input:
        model=f"{RUN_DIR}/model.pt",
        split=f"{DATA_DIR}/split.json",
    output:
        f"{RUN_DIR}/speed.json",
    params:
        cli=OBJGUIDED,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
        subset=EVAL["subset"],
        device=config["device"],
        max_images=(
            f"--max-images {config['timing']['max_images']}" if config["timing"]["max_images"] else ""
        ),
    resources:
        gpu=gpus_for,
    log:
        f"{RUN_DIR}/time.log",
    shell:
        "{params.cli} time --model {input.model} --data {params.data} --split {input.split}"
        " --subset {params.subset} --device {params.device} {params.max_images} --out {output} 2> {log}"
