"""Snakemake adapter: metrics.json of one model (logic in medflow.evaluate.run)."""

from pathlib import Path

from medflow.evaluate.run import evaluate_model
from medflow.logs import rule_log

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    image_head = smk.input.get("image_head")
    evaluate_model(
        smk.input.predictions,
        smk.output.metrics,
        head_info=smk.input.get("info"),
        slice_predictions=Path(image_head).with_name("slice_predictions.csv") if image_head else None,
        n_boot=smk.params.n_boot,
        seed=smk.params.seed,
    )
