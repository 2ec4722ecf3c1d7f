"""Entry point of the evaluation report: predictions.csv → one nested, JSON-ready metrics dict.

Layout of :func:`evaluate_predictions`' result::

    {"schema", "level", "n_boot", "seed", "methods": {...},
     "tasks": {task: {"threshold": t | None,
                      "splits": {split: {n, n_patients, n_positive, prevalence, n_unknown_label,
                                         n_missing_prob, <one key per report metric>}},
                      "centers": [{split, center, n, n_patients, n_positive, prevalence, auroc}]}}}

The report metrics (AUROC, AUPRC, the threshold metrics, Brier, calibration, ...) are the entries
of :mod:`medflow.evaluate.registry`, stored in its order. Splits come in the order test, external,
val, train. Rows with an unknown label (NaN ``y_true``) are left out and counted. Anything that
cannot be computed on a split (AUROC with one class, a threshold metric without a threshold, ...)
is ``None`` with a ``reason`` string, never a crash, so one degenerate centre cannot take the
whole report down.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from medflow.evaluate._frame import canonical, jsonable, ordered_splits
from medflow.evaluate.bootstrap import METHOD as BOOT_METHOD
from medflow.evaluate.compare import compare_heads
from medflow.evaluate.registry import list_metrics
from medflow.evaluate.split_data import SplitData, ranking_metrics
from medflow.io.atomic import atomic_path

__all__ = ["compare_heads", "evaluate_predictions", "write_metrics"]

SCHEMA = "medflow.metrics/1"
METHODS = {
    "auroc_delong_ci": "DeLong variance (fast midrank algorithm), Wald interval on the AUC scale clipped to "
    "[0, 1]; rows treated as independent",
    "bootstrap_ci": f"{BOOT_METHOD}: patients drawn with replacement, all their rows kept; "
    "resamples lacking a class are redrawn",
    "proportion_ci": "Wilson score interval",
    "f1_ci": BOOT_METHOD,
    "threshold_rule": "positive when y_prob >= threshold",
    "calibration": "intercept: logistic model with logit(p) offset; slope: logistic regression on logit(p); "
    "p clipped to [1e-6, 1-1e-6]; curve: quantile bins",
    "decision_curve": "net benefit = TP/n - FP/n * t/(1-t); treat-all = prev - (1-prev) * t/(1-t)",
}


def _counts(rows: pd.DataFrame) -> dict:
    n, n_pos = len(rows), int(rows["y_true"].sum())
    return {
        "n": n,
        "n_patients": int(rows["patient_id"].nunique()),
        "n_positive": n_pos,
        "prevalence": n_pos / n if n else None,
    }


def _split_metrics(
    rows: pd.DataFrame, threshold: float | None, *, n_boot: int, seed: int, level: float
) -> dict:
    labelled = rows[rows["y_true"].notna()]
    scored = labelled[labelled["y_prob"].notna()]
    split = SplitData(
        y=scored["y_true"].to_numpy(dtype=np.int8),
        p=scored["y_prob"].to_numpy(dtype=float),
        groups=scored["patient_id"].to_numpy(),
        threshold=threshold,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
    out = _counts(scored)
    out.update(n_unknown_label=len(rows) - len(labelled), n_missing_prob=len(labelled) - len(scored))
    for metric in list_metrics():
        out[metric.key] = metric.compute(split)
    return out


def _center_rows(rows: pd.DataFrame, split: str, *, n_boot: int, seed: int, level: float) -> list[dict]:
    out = []
    scored = rows[rows["y_true"].notna() & rows["y_prob"].notna()]
    for center, g in scored.groupby("center", sort=True):
        y = g["y_true"].to_numpy(dtype=np.int8)
        auroc, _ = ranking_metrics(
            y,
            g["y_prob"].to_numpy(dtype=float),
            g["patient_id"].to_numpy(),
            n_boot=n_boot,
            seed=seed,
            level=level,
            with_auprc=False,
        )
        out.append({"split": split, "center": center, **_counts(g), "auroc": auroc})
    return out


def evaluate_predictions(
    predictions: pd.DataFrame,
    thresholds: dict[str, float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Every metric of the report for every task and split of a predictions.csv frame.

    ``thresholds`` maps task → operating threshold (chosen on validation data by the head); tasks
    without one get ``None`` threshold metrics with a reason. The result depends only on the
    rows' content, not their order, and is identical for the same ``seed``.
    """
    df = canonical(predictions)
    out: dict = {
        "schema": SCHEMA,
        "level": float(level),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "methods": METHODS,
        "tasks": {},
    }
    for task, rows in df.groupby("task", sort=True):
        t = thresholds.get(task)
        t = None if t is None or not np.isfinite(t) else float(t)
        entry: dict = {"threshold": t, "splits": {}, "centers": []}
        for split in ordered_splits(list(rows["split"].unique())):
            part = rows[rows["split"] == split]
            entry["splits"][split] = _split_metrics(part, t, n_boot=n_boot, seed=seed, level=level)
            entry["centers"] += _center_rows(part, split, n_boot=n_boot, seed=seed, level=level)
        out["tasks"][task] = entry
    return jsonable(out)


def write_metrics(metrics: dict, path: str | os.PathLike[str]) -> None:
    """Write ``metrics`` as strict JSON (NaN → null), atomically: a killed job leaves no half file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(jsonable(metrics), fh, indent=2, allow_nan=False)
        fh.write("\n")
