# The inputs of stage 2 that are not a head's own: feature vectors of the trained stage-1 networks
# and of the encoded table modalities, all under features/.


rule features:
    """The trained encoder's feature vectors of every ingested sample (per slice for slice stacks)."""
    input:
        unpack(PLAN.stage1_inputs),
        model=LAYOUT.stage1_model("{study}", "{model}"),
    output:
        features=LAYOUT.features("{study}", "{model}"),
    params:
        spec=lambda wc: spec_for("train", PLAN.stage1_spec(wc)),
        label=PLAN.stage1_label,
        stage=STAGE_VERSIONS["features"],
    threads: PLAN.inference_threads
    resources:
        mem_mb=memory_mb(8000),
        runtime=240,
        gpu=PLAN.stage1_inference_gpus,
    log:
        LAYOUT.log("{study}", "features_{model}"),
    conda:
        ENV
    script:
        "../scripts/features.py"


rule encode:
    """Encode a table modality for stage 2 (EHR events → time grid, notes → doc2vec), fitted on
    the training split only."""
    input:
        table=PLAN.encoder_table,
        splits=LAYOUT.splits("{study}"),
    output:
        features=LAYOUT.features("{study}", "{encoder}"),
    params:
        spec=PLAN.encoder_spec,
        window_hours=PLAN.encoder_window,
        stage=STAGE_VERSIONS["encode"],
    threads: 1
    resources:
        mem_mb=memory_mb(4000),
        runtime=120,
    log:
        LAYOUT.log("{study}", "encode_{encoder}"),
    conda:
        ENV
    script:
        "../scripts/encode.py"


rule features_csv:
    """On request only (no study target needs it): a network's feature vectors as CSV for R, SPSS or
    a spreadsheet, one row per sample (per slice for slice stacks) with its patient and split."""
    input:
        features=LAYOUT.features("{study}", "{model}"),
        splits=LAYOUT.splits("{study}"),
    output:
        csv=LAYOUT.features_csv("{study}", "{model}"),
    threads: 1
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    log:
        LAYOUT.log("{study}", "features_csv_{model}"),
    conda:
        ENV
    script:
        "../scripts/features_csv.py"
