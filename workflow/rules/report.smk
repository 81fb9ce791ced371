# Report: ours against the paper, Tables I and II (CSV, Markdown, HTML, LaTeX), the extra metrics, Figure 4, the
# error analysis and the loss curves (per dataset), Figure 5, and report.html linking them with every run's logs and
# provenance. The same tables and figures are report() outputs, so `snakemake --report report.zip` carries them.


rule report:
    conda:
        CONDA_ENV_FILE
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    input:
        metrics=[f"{d}/metrics.json" for d in run_dirs()],
        speed=[f"{d}/speed.json" for d in run_dirs()],
        predictions=[f"{d}/predictions.json" for d in run_dirs()],
        models=[f"{d}/model.pt" for d in run_dirs()],
        data=[f"{DATA_DIR}/manifest.json".format(dataset=d) for d in config["datasets"]],
        splits=[f"{DATA_DIR}/split.json".format(dataset=d) for d in config["datasets"]],
        paper=PAPER_TABLE1,
        paper2=report_spec()["paper_table2"],
    output:
        report_outputs(),
    params:
        cli=CLI,
        spec=as_json(report_spec()),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "results/logs/report.log",
    shell:
        "{params.cli} report --runs {params.spec:q} --out {params.out} 2> {log}"
