STAGE2_PARAMS = dict(
    spec=PLAN.head_spec,
    files=PLAN.head_files,
    stage=STAGE_VERSIONS["stage2"],
)


rule stage2_unimodal:
    """A unimodal EHR-study head; its embeddings are the frozen inputs of early fusion."""
    input:
        unpack(PLAN.head_inputs),
    output:
        predictions=LAYOUT.predictions("{study}", "stage2", "{head}"),
        info=LAYOUT.head_file("{study}", "{head}", "head.json"),
        excluded=LAYOUT.head_file("{study}", "{head}", "excluded.csv"),
        embeddings=LAYOUT.head_file("{study}", "{head}", "embeddings.h5"),
    params:
        **STAGE2_PARAMS,
    wildcard_constraints:
        head=names_regex(PLAN.stage2_heads(unimodal=True)),
    threads: 1
    resources:
        mem_mb=memory_mb(4000),
        runtime=240,
        gpu=PLAN.head_gpus,
    log:
        LAYOUT.log("{study}", "stage2_{head}"),
    conda:
        ENV
    script:
        "../scripts/stage2.py"


rule stage2:
    """Fit a stage-2 head (fusion, sequence or classical) and score every sample; the decision
    threshold is chosen on the validation split."""
    input:
        unpack(PLAN.head_inputs),
    output:
        predictions=LAYOUT.predictions("{study}", "stage2", "{head}"),
        info=LAYOUT.head_file("{study}", "{head}", "head.json"),
        excluded=LAYOUT.head_file("{study}", "{head}", "excluded.csv"),
    params:
        **STAGE2_PARAMS,
    wildcard_constraints:
        head=names_regex(PLAN.stage2_heads(unimodal=False)),
    threads: 1
    resources:
        mem_mb=memory_mb(4000),
        runtime=240,
        gpu=PLAN.head_gpus,
    log:
        LAYOUT.log("{study}", "stage2_{head}"),
    conda:
        ENV
    script:
        "../scripts/stage2.py"
