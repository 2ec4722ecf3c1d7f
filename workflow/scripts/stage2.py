"""Snakemake adapter: fit one stage-2 head (logic in medflow.heads.run)."""

from contextlib import nullcontext
from pathlib import Path

from medflow.heads.run import run_head
from medflow.logs import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    device, lease = None, None
    if smk.resources.gpu:  # neural heads (and XGBoost): a leased GPU when there is one, else the CPU
        from medflow.train.devices import select_device, set_threads

        set_threads(smk.threads)
        device, lease = select_device(smk.resources.gpu)
    with lease or nullcontext():
        run_head(
            smk.wildcards.head,
            dict(smk.params.spec),
            splits=smk.input.splits,
            manifest=smk.input.manifest,
            files=dict(smk.params.files),
            out_dir=Path(smk.output.predictions).parent,
            device=device,
        )
