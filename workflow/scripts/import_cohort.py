"""Snakemake adapter: import a public layout into a manifest (logic in medflow.cohort.importers)."""

from pathlib import Path

from medflow.cohort.importers import run_importer
from medflow.logs import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    run_importer(
        smk.params.source, Path(smk.params.path), Path(smk.output.manifest).parent,
        workers=smk.threads, **smk.params.options,  # the cohort settings of this importer (others are dropped)
    )
