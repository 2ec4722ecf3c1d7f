rule demo_cohort:
    """Write a synthetic cohort in the real file formats, with a planted signal and its oracle AUCs."""
    output:
        manifest=f"{RESOURCES}/demo/{{study}}/manifest.csv",
        info=f"{RESOURCES}/demo/{{study}}/cohort.json",
        oracle=f"{RESOURCES}/demo/{{study}}/oracle.json",
    params:
        template=lambda wc: STUDIES[wc.study]["cohort"].get("template", wc.study),
        patients=lambda wc: STUDIES[wc.study]["cohort"]["patients"],
        image_size=lambda wc: STUDIES[wc.study]["cohort"]["image_size"],
        seed=lambda wc: STUDIES[wc.study]["cohort"]["seed"],
        stage=STAGE_VERSIONS["demo"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        "logs/{study}/demo_cohort.log",
    conda:
        ENV
    script:
        "../scripts/demo_cohort.py"


rule import_cohort:
    """Turn a public layout (LUNA16 patch file, RSNA-PE folders) into a medflow manifest."""
    input:
        import_source,
    output:
        manifest=f"{RESOURCES}/imported/{{study}}/manifest.csv",
        info=f"{RESOURCES}/imported/{{study}}/cohort.json",
    params:
        source=lambda wc: STUDIES[wc.study]["cohort"]["source"],
        path=lambda wc: STUDIES[wc.study]["cohort"]["path"],
        stage=STAGE_VERSIONS["import"],
    threads: 4
    resources:
        mem_mb=memory_mb(4000),
        runtime=120,
    log:
        "logs/{study}/import_cohort.log",
    conda:
        ENV
    script:
        "../scripts/import_cohort.py"


rule validate_manifest:
    """Check the manifest against the study's config; every later stage reads this checked copy."""
    input:
        manifest=source_manifest,
    output:
        manifest=f"{RESULTS}/{{study}}/manifest.csv",
        info=f"{RESULTS}/{{study}}/cohort.json",
    params:
        study=lambda wc: manifest_view(STUDIES[wc.study]),
        on_bad_input=CHECKED["on_bad_input"],
        stage=STAGE_VERSIONS["manifest"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        "logs/{study}/validate_manifest.log",
    conda:
        ENV
    script:
        "../scripts/validate_manifest.py"
