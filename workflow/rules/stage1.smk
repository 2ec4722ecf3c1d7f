STAGE1_INPUT = dict(
    data=stage1_ingest,
    splits=f"{RESULTS}/{{study}}/splits.csv",
    manifest=f"{RESULTS}/{{study}}/manifest.csv",
)


rule pretrain_stage1:
    """Contrastive pre-training (SimCLR / SupCon) of a stage-1 encoder on the training split (studies
    without folds; see pretrain_fold)."""
    input:
        **STAGE1_INPUT,
    output:
        model=f"{RESULTS}/{{study}}/stage1/{{model}}/pretrain/model.pt",
        history=f"{RESULTS}/{{study}}/stage1/{{model}}/pretrain/history.csv",
    params:
        job="pretrain",
        spec=lambda wc: spec_for("pretrain", stage1_spec(wc)),
        label=stage1_label,
        fold=None,
        stage=STAGE_VERSIONS["stage1"],
    wildcard_constraints:
        model=_escaped(SINGLE_MODELS),
    threads: 2
    resources:
        mem_mb=memory_mb(8000),
        runtime=1440,
        gpu=stage1_gpus,
        ranks=stage1_ranks,
    log:
        "logs/{study}/pretrain_{model}.log",
    conda:
        ENV
    script:
        "../scripts/stage1.py"


rule pretrain_fold:
    """Contrastive pre-training for fold k of a cross-validated network, on the training folds ≠ k:
    an encoder pre-trained on fold k (SupCon: on its labels) would leak into fold k's out-of-fold
    predictions and threshold."""
    input:
        **STAGE1_INPUT,
    output:
        model=f"{RESULTS}/{{study}}/stage1/{{model}}/fold{{fold}}/pretrain/model.pt",
        history=f"{RESULTS}/{{study}}/stage1/{{model}}/fold{{fold}}/pretrain/history.csv",
    params:
        job="pretrain",
        spec=lambda wc: spec_for("pretrain", stage1_spec(wc)),
        label=stage1_label,
        fold=lambda wc: int(wc.fold),
        stage=STAGE_VERSIONS["stage1"],
    wildcard_constraints:
        model=_escaped(FOLD_MODELS),
    threads: 2
    resources:
        mem_mb=memory_mb(8000),
        runtime=1440,
        gpu=stage1_gpus,
        ranks=stage1_ranks,
    log:
        "logs/{study}/pretrain_{model}_fold{fold}.log",
    conda:
        ENV
    script:
        "../scripts/stage1.py"


rule train_stage1:
    """Train a stage-1 network (a classifier on the frozen encoder when it was pre-trained) and
    score every sample."""
    input:
        **STAGE1_INPUT,
        encoder=stage1_encoder,
    output:
        model=f"{RESULTS}/{{study}}/stage1/{{model}}/model.pt",
        history=f"{RESULTS}/{{study}}/stage1/{{model}}/history.csv",
        predictions=f"{RESULTS}/{{study}}/stage1/{{model}}/predictions.csv",
    params:
        job="train",
        spec=lambda wc: spec_for("train", stage1_spec(wc)),
        label=stage1_label,
        fold=None,
        stage=STAGE_VERSIONS["stage1"],
    wildcard_constraints:
        model=_escaped(SINGLE_MODELS),
    threads: 2
    resources:
        mem_mb=memory_mb(8000),
        runtime=1440,
        gpu=stage1_gpus,
        ranks=stage1_ranks,
    log:
        "logs/{study}/train_{model}.log",
    conda:
        ENV
    script:
        "../scripts/stage1.py"


rule train_fold:
    """Train fold k of a cross-validated stage-1 network (validation = fold k of the training split)."""
    input:
        **STAGE1_INPUT,
        encoder=stage1_encoder,
    output:
        model=f"{RESULTS}/{{study}}/stage1/{{model}}/fold{{fold}}/model.pt",
        history=f"{RESULTS}/{{study}}/stage1/{{model}}/fold{{fold}}/history.csv",
        predictions=f"{RESULTS}/{{study}}/stage1/{{model}}/fold{{fold}}/predictions.csv",
    params:
        job="train",
        spec=lambda wc: spec_for("train", stage1_spec(wc)),
        label=stage1_label,
        fold=lambda wc: int(wc.fold),
        stage=STAGE_VERSIONS["stage1"],
    threads: 2
    resources:
        mem_mb=memory_mb(8000),
        runtime=1440,
        gpu=stage1_gpus,
        ranks=stage1_ranks,
    log:
        "logs/{study}/train_{model}_fold{fold}.log",
    conda:
        ENV
    script:
        "../scripts/stage1.py"


rule fold_ensemble:
    """Out-of-fold predictions for the training split, the mean of the fold models elsewhere."""
    input:
        folds=fold_predictions,
        splits=f"{RESULTS}/{{study}}/splits.csv",
    output:
        predictions=f"{RESULTS}/{{study}}/stage1/{{model}}/predictions.csv",
    params:
        stage=STAGE_VERSIONS["stage1"],
    wildcard_constraints:
        model=_escaped(FOLD_MODELS),
    threads: 1
    resources:
        mem_mb=memory_mb(1000),
        runtime=10,
    log:
        "logs/{study}/fold_ensemble_{model}.log",
    conda:
        ENV
    script:
        "../scripts/fold_ensemble.py"


rule features:
    """The trained encoder's feature vectors of every ingested sample (per slice for slice stacks)."""
    input:
        **STAGE1_INPUT,
        model=f"{RESULTS}/{{study}}/stage1/{{model}}/model.pt",
    output:
        features=f"{RESULTS}/{{study}}/features/{{model}}.h5",
    params:
        spec=lambda wc: spec_for("train", stage1_spec(wc)),
        label=stage1_label,
        stage=STAGE_VERSIONS["features"],
    threads: 2
    resources:
        mem_mb=memory_mb(8000),
        runtime=240,
        gpu=stage1_inference_gpus,
    log:
        "logs/{study}/features_{model}.log",
    conda:
        ENV
    script:
        "../scripts/features.py"
