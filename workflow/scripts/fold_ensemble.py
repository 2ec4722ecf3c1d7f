"""Snakemake adapter: combine the fold models' predictions (logic in medflow.train.stage1)."""

import re

from medflow.logs import rule_log
from medflow.train.stage1 import fold_ensemble

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    folds = {int(re.search(r"/fold(\d+)/", path).group(1)): path for path in smk.input.folds}
    fold_ensemble(folds, smk.input.splits, smk.output.predictions)
