"""Snakemake adapter: encode an events or notes modality for stage 2 (logic in medflow.encoders)."""

from medflow.encoders.events import encode_events
from medflow.encoders.notes import encode_notes
from medflow.logs import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    spec = dict(smk.params.spec)
    if spec["type"] == "events":
        encode_events(smk.input.table, smk.input.splits, smk.output.features,
                      window_hours=smk.params.window_hours, bin_hours=spec["bin_hours"])
    else:
        encode_notes(smk.input.table, smk.input.splits, smk.output.features, vector_size=spec["vector_size"],
                     epochs=spec["epochs"], min_count=spec["min_count"], seed=spec["seed"])
