"""Snakemake adapter: ingest one modality (logic in medflow.ingest)."""

from pathlib import Path

from medflow.cohort.manifest import read_validated
from medflow.ingest import ingest_modality
from medflow.logs import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    cohort = read_validated(smk.input.manifest, smk.input.info)
    modality = dict(smk.wildcards).get("image_modality") or smk.wildcards.table_modality
    ingest_modality(
        cohort.manifest,
        cohort.root,
        modality,
        dict(smk.params.spec),
        Path(smk.output.data),
        Path(smk.output.problems),
        threads=smk.threads,
        on_bad_input=smk.params.on_bad_input,
        compression=smk.params.compression,
        compression_level=smk.params.compression_level,
        source_hash=cohort.info.get("manifest_hash", ""),
        reuse_previous=True,  # samples whose files and settings are unchanged are copied, not decoded again
        name_inputs_in_logs=smk.params.name_inputs_in_logs,
    )
