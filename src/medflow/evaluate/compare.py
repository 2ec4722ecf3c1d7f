"""Two heads on the same samples: paired DeLong test and paired patient-bootstrap ΔAUROC.

Heads are paired by ``sample_id`` (an inner join), never by row order: two predictions files may
list samples differently, and a head may have excluded samples it had no input for. Samples in
only one file are counted and a few are named, so a comparison on a silently shrunken set is
visible in the report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medflow.evaluate._frame import canonical, jsonable
from medflow.evaluate.bootstrap import paired_bootstrap_delta_auc
from medflow.evaluate.roc import delong_paired

N_EXAMPLES = 10


def _select(pred: pd.DataFrame, task: str, split: str) -> pd.DataFrame:
    df = canonical(pred)
    return df[(df["task"] == task) & (df["split"] == split) & df["y_true"].notna() & df["y_prob"].notna()]


def compare_heads(
    pred_a: pd.DataFrame,
    pred_b: pd.DataFrame,
    *,
    task: str,
    split: str = "test",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """AUROC of head a vs head b on the samples both scored (labelled, same task and split).

    Returns counts, the ids present in only one head, ``delong`` (:func:`delong_paired`) and
    ``bootstrap`` (:func:`paired_bootstrap_delta_auc`, resampling patients); with one class the
    two tests are ``None`` and ``reason`` says why. Differences are a − b.
    """
    a, b = _select(pred_a, task, split), _select(pred_b, task, split)
    ids_a, ids_b = set(a["sample_id"]), set(b["sample_id"])
    only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
    both = a.merge(b, on="sample_id", suffixes=("_a", "_b"), validate="one_to_one").sort_values("sample_id")
    if not (both["y_true_a"] == both["y_true_b"]).all():
        raise ValueError("the two heads disagree on y_true for some samples")
    if not (both["patient_id_a"] == both["patient_id_b"]).all():
        raise ValueError("the two heads disagree on patient_id for some samples")
    y = both["y_true_a"].to_numpy(dtype=np.int8)
    out: dict = {
        "task": task,
        "split": split,
        "n": len(both),
        "n_patients": int(both["patient_id_a"].nunique()),
        "n_positive": int(y.sum()),
        "n_only_in_a": len(only_a),
        "n_only_in_b": len(only_b),
        "only_in_a": only_a[:N_EXAMPLES],
        "only_in_b": only_b[:N_EXAMPLES],
        "delong": None,
        "bootstrap": None,
        "reason": None,
    }
    if y.size == 0 or y.min() == y.max():
        out["reason"] = "paired comparison needs both classes among the shared samples"
        return out
    pa, pb = both["y_prob_a"].to_numpy(float), both["y_prob_b"].to_numpy(float)
    out["delong"] = delong_paired(y, pa, pb, level)
    out["bootstrap"] = paired_bootstrap_delta_auc(
        y, pa, pb, both["patient_id_a"].to_numpy(), n_boot=n_boot, level=level, seed=seed
    )
    return jsonable(out)
