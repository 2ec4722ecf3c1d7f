rule split:
    """Patient-grouped, stratified train/val/test (+ external centres, + folds) for one study."""
    input:
        manifest=LAYOUT.manifest("{study}"),
        info=LAYOUT.cohort_info("{study}"),
    output:
        splits=LAYOUT.splits("{study}"),
    params:
        split=lambda wc: PLAN.studies[wc.study]["split"],
        labels=lambda wc: PLAN.studies[wc.study]["labels"],
        stage=STAGE_VERSIONS["split"],
    threads: 1
    resources:
        mem_mb=memory_mb(1000),
        runtime=10,
    log:
        LAYOUT.log("{study}", "split"),
    conda:
        ENV
    script:
        "../scripts/split.py"
