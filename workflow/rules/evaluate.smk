rule evaluate:
    """metrics.json of one model: discrimination with DeLong and patient-bootstrap CIs, threshold
    metrics at the validation-chosen threshold, calibration, decision curve, per centre."""
    input:
        unpack(PLAN.evaluate_inputs),
    output:
        metrics=LAYOUT.metrics("{study}", "{stage}", "{name}"),
    params:
        slice_predictions=PLAN.evaluate_slices,
        n_boot=EVALUATION["bootstrap"],
        seed=EVALUATION["seed"],
        stage=STAGE_VERSIONS["evaluate"],
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        LAYOUT.log("{study}", "evaluate_{stage}_{name}"),
    conda:
        ENV
    script:
        "../scripts/evaluate.py"
