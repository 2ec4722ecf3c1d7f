rule report:
    """The self-contained HTML report of one model."""
    input:
        unpack(PLAN.report_inputs),
    output:
        html=report(
            LAYOUT.model_report("{study}", "{name}"),
            caption="../report/model.rst",
            category="{study}",
            labels={"model": "{name}"},
        ),
    params:
        kind=lambda wc: PLAN.models[wc.study][wc.name],
        spec=PLAN.model_spec,
        label=PLAN.model_label,
        study=lambda wc: report_view(PLAN.studies[wc.study]),
        modalities=PLAN.model_modalities,
        reference_names=PLAN.references,
        n_boot=EVALUATION["bootstrap"],
        seed=EVALUATION["seed"],
        stage=STAGE_VERSIONS["report"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        LAYOUT.log("{study}", "report_{name}"),
    conda:
        ENV
    script:
        "../scripts/report.py"


rule study_report:
    """All models of a study side by side."""
    input:
        unpack(PLAN.study_report_inputs),
    output:
        html=report(
            LAYOUT.study_report("{study}"),
            caption="../report/study.rst",
            category="{study}",
            labels={"model": "all models"},
        ),
    params:
        names=lambda wc: list(PLAN.models[wc.study]),
        kinds=lambda wc: list(PLAN.models[wc.study].values()),
        label=lambda wc: stratify_label(PLAN.studies[wc.study]),
        study=lambda wc: report_view(PLAN.studies[wc.study]),
        modalities=PLAN.study_modalities,
        stage=STAGE_VERSIONS["report"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        LAYOUT.log("{study}", "study_report"),
    conda:
        ENV
    script:
        "../scripts/study_report.py"
