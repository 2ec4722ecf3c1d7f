rule split:
    """Patient-grouped, stratified train/val/test (+ external centres, + folds) for one study."""
    input:
        manifest=f"{RESULTS}/{{study}}/manifest.csv",
        info=f"{RESULTS}/{{study}}/cohort.json",
    output:
        splits=f"{RESULTS}/{{study}}/splits.csv",
    params:
        split=lambda wc: STUDIES[wc.study]["split"],
        labels=lambda wc: STUDIES[wc.study]["labels"],
        stage=STAGE_VERSIONS["split"],
    threads: 1
    resources:
        mem_mb=memory_mb(1000),
        runtime=10,
    log:
        "logs/{study}/split.log",
    conda:
        ENV
    script:
        "../scripts/split.py"
