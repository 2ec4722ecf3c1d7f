"""Entry point of the evaluation report: predictions.csv → one nested, JSON-ready metrics dict.

Layout of :func:`evaluate_predictions`' result::

    {"schema", "level", "n_boot", "seed", "methods": {...},
     "tasks": {task: {"threshold": t | None,
                      "splits": {split: {n, n_patients, n_positive, prevalence, n_unknown_label,
                                         n_missing_prob, auroc, auprc, threshold, confusion,
                                         sensitivity, specificity, ppv, npv, accuracy, f1,
                                         brier, calibration, decision_curve}},
                      "centers": [{split, center, n, n_patients, n_positive, prevalence, auroc}]}}}

Splits come in the order test, external, val, train. Rows with an unknown label (NaN ``y_true``)
are left out and counted. Anything that cannot be computed on a split (AUROC with one class, a
threshold metric without a threshold, ...) is ``None`` with a ``reason`` string, never a crash,
so one degenerate centre cannot take the whole report down.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from medflow.evaluate._frame import canonical, jsonable, ordered_splits
from medflow.evaluate.bootstrap import METHOD as BOOT_METHOD
from medflow.evaluate.bootstrap import bootstrap_cis
from medflow.evaluate.calibration import brier, calibration_intercept_slope, reliability_curve
from medflow.evaluate.classification import classification_metrics
from medflow.evaluate.compare import compare_heads
from medflow.evaluate.decision import net_benefit
from medflow.evaluate.roc import delong_ci
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
THRESHOLD_KEYS = ("confusion", "sensitivity", "specificity", "ppv", "npv", "accuracy", "f1")


def _class_reason(n_pos: int, n: int) -> str | None:
    if n == 0:
        return "no labelled samples"
    if n_pos == 0:
        return "only negatives (one class)"
    if n_pos == n:
        return "only positives (one class)"
    return None


def _counts(rows: pd.DataFrame) -> dict:
    n, n_pos = len(rows), int(rows["y_true"].sum())
    return {
        "n": n,
        "n_patients": int(rows["patient_id"].nunique()),
        "n_positive": n_pos,
        "prevalence": n_pos / n if n else None,
    }


def _ranking(
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
    reason = _class_reason(int(y.sum()), y.size)
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


def _calibration(y: np.ndarray, p: np.ndarray, level: float) -> dict:
    fit = calibration_intercept_slope(y, p, level) if y.size else {"reason": "no labelled samples"}
    curve = reliability_curve(y, p) if y.size else {"mean_predicted": [], "fraction_positive": []}
    return {
        "intercept": fit.get("intercept"),
        "intercept_ci": fit.get("intercept_ci"),
        "slope": fit.get("slope"),
        "slope_ci": fit.get("slope_ci"),
        "reason": fit.get("reason"),
        "curve": curve,
    }


def _split_metrics(
    rows: pd.DataFrame, threshold: float | None, *, n_boot: int, seed: int, level: float
) -> dict:
    labelled = rows[rows["y_true"].notna()]
    scored = labelled[labelled["y_prob"].notna()]
    y = scored["y_true"].to_numpy(dtype=np.int8)
    p = scored["y_prob"].to_numpy(dtype=float)
    groups = scored["patient_id"].to_numpy()
    out = _counts(scored)
    out.update(n_unknown_label=len(rows) - len(labelled), n_missing_prob=len(labelled) - len(scored))
    out["auroc"], out["auprc"] = _ranking(
        y, p, groups, n_boot=n_boot, seed=seed, level=level, with_auprc=True
    )
    out["threshold"] = threshold
    if threshold is None or y.size == 0:
        why = "no threshold for this task" if threshold is None else "no labelled samples"
        out.update({k: {"value": None, "ci": None, "reason": why} for k in THRESHOLD_KEYS})
        out["confusion"] = None
    else:
        out.update(classification_metrics(y, p, threshold, groups, level=level, n_boot=n_boot, seed=seed))
    out["brier"] = brier(y, p) if y.size else None
    out["calibration"] = _calibration(y, p, level)
    if y.size:
        dc = net_benefit(y, p)
        out["decision_curve"] = {
            "thresholds": dc["thresholds"],
            "model": dc["model"],
            "treat_all": dc["treat_all"],
        }
    else:
        out["decision_curve"] = None
    return out


def _center_rows(rows: pd.DataFrame, split: str, *, n_boot: int, seed: int, level: float) -> list[dict]:
    out = []
    scored = rows[rows["y_true"].notna() & rows["y_prob"].notna()]
    for center, g in scored.groupby("center", sort=True):
        y = g["y_true"].to_numpy(dtype=np.int8)
        auroc, _ = _ranking(
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
