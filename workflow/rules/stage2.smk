rule encode:
    """Encode a table modality for stage 2 (EHR events → time grid, notes → doc2vec), fitted on
    the training split only."""
    input:
        table=encoder_table,
        splits=f"{RESULTS}/{{study}}/splits.csv",
    output:
        features=f"{RESULTS}/{{study}}/features/{{encoder}}.h5",
    params:
        spec=encoder_spec,
        window_hours=encoder_window,
        stage=STAGE_VERSIONS["encode"],
    threads: 1
    resources:
        mem_mb=memory_mb(4000),
        runtime=120,
    log:
        "logs/{study}/encode_{encoder}.log",
    conda:
        ENV
    script:
        "../scripts/encode.py"


STAGE2_PARAMS = dict(
    spec=head_spec,
    files=head_files,
    stage=STAGE_VERSIONS["stage2"],
)


rule stage2_unimodal:
    """A unimodal EHR-study head; its embeddings are the frozen inputs of early fusion."""
    input:
        unpack(head_inputs),
    output:
        predictions=f"{RESULTS}/{{study}}/stage2/{{head}}/predictions.csv",
        info=f"{RESULTS}/{{study}}/stage2/{{head}}/head.json",
        excluded=f"{RESULTS}/{{study}}/stage2/{{head}}/excluded.csv",
        embeddings=f"{RESULTS}/{{study}}/stage2/{{head}}/embeddings.h5",
    params:
        **STAGE2_PARAMS,
    wildcard_constraints:
        head=_escaped(UNIMODAL_HEADS),
    threads: 1
    resources:
        mem_mb=memory_mb(4000),
        runtime=240,
        gpu=head_gpus,
    log:
        "logs/{study}/stage2_{head}.log",
    conda:
        ENV
    script:
        "../scripts/stage2.py"


rule stage2:
    """Fit a stage-2 head (fusion, sequence or classical) and score every sample; the decision
    threshold is chosen on the validation split."""
    input:
        unpack(head_inputs),
    output:
        predictions=f"{RESULTS}/{{study}}/stage2/{{head}}/predictions.csv",
        info=f"{RESULTS}/{{study}}/stage2/{{head}}/head.json",
        excluded=f"{RESULTS}/{{study}}/stage2/{{head}}/excluded.csv",
    params:
        **STAGE2_PARAMS,
    wildcard_constraints:
        head=_escaped(OTHER_HEADS),
    threads: 1
    resources:
        mem_mb=memory_mb(4000),
        runtime=240,
        gpu=head_gpus,
    log:
        "logs/{study}/stage2_{head}.log",
    conda:
        ENV
    script:
        "../scripts/stage2.py"
