"""Snakemake adapter: metrics.json of one model (logic in medflow.evaluate.run)."""

from medflow.evaluate.run import evaluate_model
from medflow.logs import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    evaluate_model(
        smk.input.predictions,
        smk.output.metrics,
        head_info=smk.input.get("info"),
        slice_predictions=smk.params.slice_predictions,
        n_boot=smk.params.n_boot,
        seed=smk.params.seed,
    )
