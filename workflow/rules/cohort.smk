rule demo_cohort:
    """Write a synthetic cohort in the real file formats, with a planted signal and its oracle AUCs."""
    output:
        manifest=LAYOUT.manifest("{study}", "demo"),
        info=LAYOUT.cohort_info("{study}", "demo"),
        oracle=LAYOUT.oracle("{study}"),
    params:
        template=lambda wc: PLAN.studies[wc.study]["cohort"].get("template", wc.study),
        patients=lambda wc: PLAN.studies[wc.study]["cohort"]["patients"],
        image_size=lambda wc: PLAN.studies[wc.study]["cohort"]["image_size"],
        seed=lambda wc: PLAN.studies[wc.study]["cohort"]["seed"],
        stage=STAGE_VERSIONS["demo"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        LAYOUT.log("{study}", "demo_cohort"),
    conda:
        ENV
    script:
        "../scripts/demo_cohort.py"


rule import_cohort:
    """Turn a public layout (LUNA16 patch file, RSNA-PE folders) into a medflow manifest."""
    input:
        PLAN.import_source,
    output:
        manifest=LAYOUT.manifest("{study}", "imported"),
        info=LAYOUT.cohort_info("{study}", "imported"),
    params:
        source=lambda wc: PLAN.studies[wc.study]["cohort"]["source"],
        path=lambda wc: PLAN.studies[wc.study]["cohort"]["path"],
        options=PLAN.import_options,
        stage=STAGE_VERSIONS["import"],
    threads: 4
    resources:
        mem_mb=memory_mb(4000),
        runtime=120,
    log:
        LAYOUT.log("{study}", "import_cohort"),
    conda:
        ENV
    script:
        "../scripts/import_cohort.py"


rule validate_manifest:
    """Check the manifest against the study's config; every later stage reads this checked copy."""
    input:
        manifest=PLAN.source_manifest,
    output:
        manifest=LAYOUT.manifest("{study}"),
        info=LAYOUT.cohort_info("{study}"),
    params:
        study=lambda wc: manifest_view(PLAN.studies[wc.study]),
        on_bad_input=CHECKED["on_bad_input"],
        stage=STAGE_VERSIONS["manifest"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        LAYOUT.log("{study}", "validate_manifest"),
    conda:
        ENV
    script:
        "../scripts/validate_manifest.py"
