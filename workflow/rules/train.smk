# Training: one job per (dataset, method, variant, seed). GPU methods ask for gpu=1; the job itself
# claims a free device slot (objguided.engine.device), so N jobs under --resources gpu=N use N GPUs.


rule train:
    conda:
        ENV_FILE
    input:
        manifest=f"{DATA_DIR}/manifest.json",
        split=f"{DATA_DIR}/split.json",
    output:
        f"{RUN_DIR}/model.pt",
    params:
        cli=OBJGUIDED,
        run=run_params,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
        device=config["device"],
    resources:
        gpu=gpus_for,
    log:
        f"{RUN_DIR}/train.log",
    shell:
        "{params.cli} train --method {wildcards.method} --variant {wildcards.variant} --params {params.run:q}"
        " --data {params.data} --split {input.split} --seed {wildcards.seed} --device {params.device}"
        " --out {output} 2> {log}"
