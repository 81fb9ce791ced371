# Report: Table I (CSV + Markdown) and Figure 5 (PNG + PDF) from every run of the config.


rule report:
    conda:
        ENV_FILE
    input:
        metrics=[f"{d}/metrics.json" for d in run_dirs()],
        speed=[f"{d}/speed.json" for d in run_dirs()],
        paper=PAPER_TABLE1,
    output:
        report_targets(),
    params:
        cli=OBJGUIDED,
        spec=as_json(report_spec()),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "results/logs/report.log",
    shell:
        "{params.cli} report --runs {params.spec:q} --out {params.out} 2> {log}"
