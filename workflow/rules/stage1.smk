rule pretrain_stage1:
    """Contrastive pre-training (SimCLR / SupCon) of a stage-1 encoder on the training split (studies
    without folds; see pretrain_fold)."""
    input:
        unpack(PLAN.stage1_inputs),
    output:
        model=LAYOUT.stage1_model("{study}", "{model}", pretrain=True),
        history=LAYOUT.stage1_history("{study}", "{model}", pretrain=True),
    params:
        job="pretrain",
        spec=lambda wc: spec_for("pretrain", PLAN.stage1_spec(wc)),
        label=PLAN.stage1_label,
        fold=None,
        stage=STAGE_VERSIONS["stage1"],
    wildcard_constraints:
        model=names_regex(PLAN.stage1_models(folds=False)),
    threads: PLAN.stage1_threads
    resources:
        mem_mb=memory_mb(8000),
        runtime=1440,
        gpu=PLAN.stage1_gpus,
        ranks=PLAN.stage1_ranks,
    log:
        LAYOUT.log("{study}", "pretrain_{model}"),
    conda:
        ENV
    script:
        "../scripts/stage1.py"


rule pretrain_fold:
    """Contrastive pre-training for fold k of a cross-validated network, on the training folds ≠ k:
    an encoder pre-trained on fold k (SupCon: on its labels) would leak into fold k's out-of-fold
    predictions and threshold."""
    input:
        unpack(PLAN.stage1_inputs),
    output:
        model=LAYOUT.stage1_model("{study}", "{model}", "{fold}", pretrain=True),
        history=LAYOUT.stage1_history("{study}", "{model}", "{fold}", pretrain=True),
    params:
        job="pretrain",
        spec=lambda wc: spec_for("pretrain", PLAN.stage1_spec(wc)),
        label=PLAN.stage1_label,
        fold=lambda wc: int(wc.fold),
        stage=STAGE_VERSIONS["stage1"],
    wildcard_constraints:
        model=names_regex(PLAN.stage1_models(folds=True)),
    threads: PLAN.stage1_threads
    resources:
        mem_mb=memory_mb(8000),
        runtime=1440,
        gpu=PLAN.stage1_gpus,
        ranks=PLAN.stage1_ranks,
    log:
        LAYOUT.log("{study}", "pretrain_{model}_fold{fold}"),
    conda:
        ENV
    script:
        "../scripts/stage1.py"


rule train_stage1:
    """Train a stage-1 network (a classifier on the frozen encoder when it was pre-trained) and
    score every sample."""
    input:
        unpack(PLAN.stage1_inputs),
        encoder=PLAN.stage1_encoder,
    output:
        model=LAYOUT.stage1_model("{study}", "{model}"),
        history=LAYOUT.stage1_history("{study}", "{model}"),
        predictions=LAYOUT.predictions("{study}", "stage1", "{model}"),
    params:
        job="train",
        spec=lambda wc: spec_for("train", PLAN.stage1_spec(wc)),
        label=PLAN.stage1_label,
        fold=None,
        stage=STAGE_VERSIONS["stage1"],
    wildcard_constraints:
        model=names_regex(PLAN.stage1_models(folds=False)),
    threads: PLAN.stage1_threads
    resources:
        mem_mb=memory_mb(8000),
        runtime=1440,
        gpu=PLAN.stage1_gpus,
        ranks=PLAN.stage1_ranks,
    log:
        LAYOUT.log("{study}", "train_{model}"),
    conda:
        ENV
    script:
        "../scripts/stage1.py"


rule train_fold:
    """Train fold k of a cross-validated stage-1 network (validation = fold k of the training split)."""
    input:
        unpack(PLAN.stage1_inputs),
        encoder=PLAN.stage1_encoder,
    output:
        model=LAYOUT.stage1_model("{study}", "{model}", "{fold}"),
        history=LAYOUT.stage1_history("{study}", "{model}", "{fold}"),
        predictions=LAYOUT.predictions("{study}", "stage1", "{model}", "{fold}"),
    params:
        job="train",
        spec=lambda wc: spec_for("train", PLAN.stage1_spec(wc)),
        label=PLAN.stage1_label,
        fold=lambda wc: int(wc.fold),
        stage=STAGE_VERSIONS["stage1"],
    threads: PLAN.stage1_threads
    resources:
        mem_mb=memory_mb(8000),
        runtime=1440,
        gpu=PLAN.stage1_gpus,
        ranks=PLAN.stage1_ranks,
    log:
        LAYOUT.log("{study}", "train_{model}_fold{fold}"),
    conda:
        ENV
    script:
        "../scripts/stage1.py"


rule fold_ensemble:
    """Out-of-fold predictions for the training split, the mean of the fold models elsewhere."""
    input:
        folds=PLAN.fold_predictions,
        splits=LAYOUT.splits("{study}"),
    output:
        predictions=LAYOUT.predictions("{study}", "stage1", "{model}"),
    params:
        stage=STAGE_VERSIONS["stage1"],
    wildcard_constraints:
        model=names_regex(PLAN.stage1_models(folds=True)),
    threads: 1
    resources:
        mem_mb=memory_mb(1000),
        runtime=10,
    log:
        LAYOUT.log("{study}", "fold_ensemble_{model}"),
    conda:
        ENV
    script:
        "../scripts/fold_ensemble.py"
