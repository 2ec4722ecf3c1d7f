"""One split's labelled, scored rows and the settings of the evaluation: what every report metric
(:mod:`medflow.evaluate.registry`) is computed from. Results that several metrics share (AUROC and
AUPRC draw the same bootstrap resamples; the threshold metrics come from one confusion matrix) are
computed once, on first use.

Anything that cannot be computed (AUROC with one class, a threshold metric without a threshold,
...) is ``None`` with a ``reason`` string, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from sklearn.metrics import average_precision_score

from medflow.evaluate.bootstrap import bootstrap_cis
from medflow.evaluate.classification import classification_metrics
from medflow.evaluate.roc import delong_ci

THRESHOLD_KEYS = ("confusion", "sensitivity", "specificity", "ppv", "npv", "accuracy", "f1")


def class_reason(n_pos: int, n: int) -> str | None:
    """Why a ranking metric is undefined on ``n`` labels with ``n_pos`` positives (None: it is defined)."""
    if n == 0:
        return "no labelled samples"
    if n_pos == 0:
        return "only negatives (one class)"
    if n_pos == n:
        return "only positives (one class)"
    return None


def ranking_metrics(
    y: np.ndarray,
    p: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    level: float,
    with_auprc: bool,
) -> tuple[dict, dict]:
    """AUROC (DeLong + bootstrap) and AUPRC (bootstrap), or ``None`` values with a reason."""
    reason = class_reason(int(y.sum()), y.size)
    auroc: dict = {"value": None, "delong_ci": None, "bootstrap_ci": None, "reason": reason}
    prevalence = float(y.mean()) if y.size else None
    auprc: dict = {"value": None, "bootstrap_ci": None, "prevalence": prevalence, "reason": reason}
    if reason is not None:
        return auroc, auprc
    d = delong_ci(y, p, level)
    auroc.update(value=d["auc"], delong_ci=d["ci"], delong_se=d["se"])
    metrics = ("auroc", "auprc") if with_auprc else ("auroc",)
    boot = (
        bootstrap_cis(y, p, groups, metrics=metrics, n_boot=n_boot, level=level, seed=seed)
        if n_boot > 0
        else {}
    )
    if "auroc" in boot:
        auroc.update(
            bootstrap_ci=boot["auroc"]["ci"],
            n_boot=boot["auroc"]["n_boot"],
            n_redrawn=boot["auroc"]["n_redrawn"],
        )
    if with_auprc:
        auprc["value"] = float(average_precision_score(y, p))
        if "auprc" in boot:
            auprc["bootstrap_ci"] = boot["auprc"]["ci"]
    return auroc, auprc


@dataclass
class SplitData:
    """``y`` (0/1), ``p`` and ``groups`` (patients) of the rows with a label and a score;
    ``threshold``: the task's operating threshold (None: the task has none)."""

    y: np.ndarray
    p: np.ndarray
    groups: np.ndarray
    threshold: float | None
    n_boot: int
    seed: int
    level: float

    @cached_property
    def ranking(self) -> tuple[dict, dict]:
        """(AUROC, AUPRC) on shared bootstrap resamples."""
        return ranking_metrics(self.y, self.p, self.groups, n_boot=self.n_boot, seed=self.seed,
                               level=self.level, with_auprc=True)

    @cached_property
    def at_threshold(self) -> dict:
        """The confusion counts and the six threshold metrics (see :func:`classification_metrics`)."""
        if self.threshold is None or self.y.size == 0:
            why = "no threshold for this task" if self.threshold is None else "no labelled samples"
            out: dict = {k: {"value": None, "ci": None, "reason": why} for k in THRESHOLD_KEYS}
            out["confusion"] = None
            return out
        return classification_metrics(self.y, self.p, self.threshold, self.groups, level=self.level,
                                      n_boot=self.n_boot, seed=self.seed)
