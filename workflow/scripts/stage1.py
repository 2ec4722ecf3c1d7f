"""Snakemake adapter: pre-train or train one stage-1 network (logic in medflow.train.stage1)."""

from contextlib import nullcontext
from pathlib import Path

from medflow.logs import rule_log
from medflow.train.devices import data_parallel_ranks, select_device, set_threads
from medflow.train.stage1 import train, train_replicated

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    set_threads(smk.threads)
    device, lease = select_device(smk.resources.gpu)  # the lease holds the GPU lock until the job ends
    args = dict(
        label=smk.params.label,
        ingest_path=smk.input.data,
        splits_path=smk.input.splits,
        manifest_path=smk.input.manifest,
        out_dir=Path(smk.output.model).parent,
        fold=smk.params.fold,
        encoder=smk.input.get("encoder") or None,
    )
    ranks = data_parallel_ranks(smk.resources.ranks, lease)
    with lease or nullcontext():
        if ranks > 1:  # gpus: N > 1 → DistributedDataParallel on N ranks started by torchrun
            train_replicated(ranks, smk.params.job, dict(smk.params.spec), threads=smk.threads, **args)
        else:
            train(smk.params.job, dict(smk.params.spec), device=device, **args)
