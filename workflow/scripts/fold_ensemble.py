"""Snakemake adapter: combine the fold models' predictions (logic in medflow.train.folds)."""

from medflow.logs import rule_log
from medflow.train.folds import fold_ensemble

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    # the rule lists fold k's predictions k-th (medflow.workflow.plan.Plan.fold_predictions)
    fold_ensemble(dict(enumerate(smk.input.folds)), smk.input.splits, smk.output.predictions)
