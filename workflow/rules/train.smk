# Training: one job per (dataset, method, variant, seed). GPU methods ask for gpu=1 (on SLURM: --gpus=1 on
# the GPU partition); the job itself claims its device's slot (objguided.engine.device), so N jobs under
# --resources gpu=N use N GPUs, and jobs that a scheduler gave different GPUs never wait for each other.
# A failed or killed job is retried: training resumes from the run's checkpoint.


rule train:
    conda:
        CONDA_ENV_FILE
    threads: loader_threads
    retries: 2
    input:
        manifest=f"{DATA_DIR}/manifest.json",
        split=f"{DATA_DIR}/split.json",
    output:
        f"{RUN_DIR}/model.pt",
    params:
        cli=CLI,
        run=run_params,
        data=lambda wildcards: DATA_DIR.format(dataset=wildcards.dataset),
        device=config["device"],
    resources:
        gpu=gpus_for,
        mem_mb=gpu_or_cpu(32000, 8000),
        runtime=1440,
    log:
        f"{RUN_DIR}/train.log",
    shell:
        "{params.cli} train --method {wildcards.method} --variant {wildcards.variant} --params {params.run:q}"
        " --data {params.data} --split {input.split} --seed {wildcards.seed} --device {params.device}"
        " --out {output} 2> {log}"
