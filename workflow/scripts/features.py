"""Snakemake adapter: write a trained encoder's features (logic in medflow.train.stage1)."""

from contextlib import nullcontext

from medflow.logs import rule_log
from medflow.train.devices import select_device, set_threads
from medflow.train.stage1 import extract

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    set_threads(smk.threads)
    device, lease = select_device(smk.resources.gpu)  # the lease holds the GPU lock until the job ends
    with lease or nullcontext():
        extract(
            dict(smk.params.spec),
            label=smk.params.label,
            ingest_path=smk.input.data,
            splits_path=smk.input.splits,
            manifest_path=smk.input.manifest,
            model_path=smk.input.model,
            out_path=smk.output.features,
            device=device,
        )
