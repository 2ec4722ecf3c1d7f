rule evaluate:
    """metrics.json of one model: discrimination with DeLong and patient-bootstrap CIs, threshold
    metrics at the validation-chosen threshold, calibration, decision curve, per centre."""
    input:
        unpack(evaluate_inputs),
    output:
        metrics=f"{RESULTS}/{{study}}/{{stage}}/{{name}}/metrics.json",
    params:
        n_boot=EVALUATION.get("bootstrap", 1000),
        seed=EVALUATION.get("seed", 0),
        stage=STAGE_VERSIONS["evaluate"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        "logs/{study}/evaluate_{stage}_{name}.log",
    conda:
        ENV
    script:
        "../scripts/evaluate.py"


rule report:
    """The self-contained HTML report of one model."""
    input:
        unpack(report_inputs),
    output:
        html=report(
            f"{RESULTS}/{{study}}/{{name}}_report.html",
            caption="../report/model.rst",
            category="{study}",
            labels={"model": "{name}"},
        ),
    params:
        kind=lambda wc: MODELS[wc.study][wc.name],
        spec=lambda wc: model_spec(wc.study, wc.name),
        label=lambda wc: model_label(wc.study, wc.name),
        study=lambda wc: report_view(STUDIES[wc.study]),
        reference_names=lambda wc: reference_models(STUDIES[wc.study], HEADS[wc.study], wc.name),
        n_boot=EVALUATION.get("bootstrap", 1000),
        seed=EVALUATION.get("seed", 0),
        stage=STAGE_VERSIONS["report"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        "logs/{study}/report_{name}.log",
    conda:
        ENV
    script:
        "../scripts/report.py"


rule study_report:
    """All models of a study side by side."""
    input:
        metrics=lambda wc: [f"{model_dir(wc.study, n)}/metrics.json" for n in MODELS[wc.study]],
        predictions=lambda wc: [f"{model_dir(wc.study, n)}/predictions.csv" for n in MODELS[wc.study]],
        splits=f"{RESULTS}/{{study}}/splits.csv",
        manifest=f"{RESULTS}/{{study}}/manifest.csv",
        cohort=f"{RESULTS}/{{study}}/cohort.json",
        problems=lambda wc: problem_files(wc.study),
        # the pages it links to, so that this one target brings a whole study up to date
        pages=lambda wc: [f"{RESULTS}/{wc.study}/{n}_report.html" for n in MODELS[wc.study]],
    output:
        html=report(
            f"{RESULTS}/{{study}}/report.html",
            caption="../report/study.rst",
            category="{study}",
            labels={"model": "all models"},
        ),
    params:
        names=lambda wc: list(MODELS[wc.study]),
        kinds=lambda wc: list(MODELS[wc.study].values()),
        label=lambda wc: stratify_label(STUDIES[wc.study]),
        study=lambda wc: report_view(STUDIES[wc.study]),
        stage=STAGE_VERSIONS["report"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        "logs/{study}/study_report.log",
    conda:
        ENV
    script:
        "../scripts/study_report.py"
