"""Snakemake adapter: make the patient-grouped splits (logic in medflow.split)."""

from medflow.cohort.manifest import read_validated
from medflow.logs import rule_log
from medflow.split import write_splits

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    cohort = read_validated(smk.input.manifest, smk.input.info)
    write_splits(cohort, smk.params.split, smk.params.labels, smk.output.splits)
