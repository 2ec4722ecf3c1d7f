"""Snakemake adapter: check a manifest and write the checked copy (logic in medflow.cohort.manifest)."""

from medflow.cohort.manifest import load_manifest, write_validated
from medflow.logs import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    missing = "error" if smk.params.on_bad_input == "fail" else "warn"
    cohort = load_manifest(smk.input.manifest, smk.params.study, missing_files=missing)
    write_validated(
        cohort, smk.output.manifest, smk.output.info, source=smk.input.manifest, labels=smk.params.study["labels"]
    )
