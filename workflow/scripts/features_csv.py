"""Snakemake adapter: a features file as CSV (logic in medflow.io.features)."""

from medflow.io.features import features_to_csv
from medflow.logs import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    features_to_csv(smk.input.features, smk.input.splits, smk.output.csv)
