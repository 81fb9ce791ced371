# Evaluation: predict the test subset (timed: FPS), score it with the paper's AP protocol.

EVAL = config["evaluation"]


rule predict:
    conda:
        CONDA_ENV_FILE
    threads: loader_threads
    input:
        model=f"{RUN_DIR}/model.pt",
        split=f"{DATA_DIR}/split.json",
    output:
        pred=f"{RUN_DIR}/predictions.json",
        # FPS of this very pass (the paper's protocol: batch 1, whole inference, first image dropped)
        speed=f"{RUN_DIR}/speed.json",
    params:
        cli=CLI,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
        subset=EVAL["subset"],
        device=config["device"],
    resources:
        gpu=gpus_for,
        mem_mb=gpu_or_cpu(16000, 4000),
        runtime=240,
    log:
        f"{RUN_DIR}/predict.log",
    shell:
        "{params.cli} predict --model {input.model} --data {params.data} --split {input.split}"
        " --subset {params.subset} --device {params.device} --out {output.pred} --speed-out {output.speed} 2> {log}"


rule score:
    conda:
        CONDA_ENV_FILE
    threads: SCORE_THREADS
    resources:
        mem_mb=4000,
        runtime=120,
    input:
        pred=f"{RUN_DIR}/predictions.json",
        split=f"{DATA_DIR}/split.json",
    output:
        f"{RUN_DIR}/metrics.json",
    params:
        cli=CLI,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
        subset=EVAL["subset"],
        options=score_options,
    log:
        f"{RUN_DIR}/score.log",
    shell:
        "{params.cli} score --gt {params.data} --pred {input.pred} --split {input.split}"
        " --subset {params.subset} {params.options} --out {output} 2> {log}"
