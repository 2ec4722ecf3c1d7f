"""Threshold metrics (sensitivity, specificity, PPV, NPV, accuracy, F1) with confidence intervals.

Each proportion gets a Wilson score interval (statsmodels): unlike the Wald interval it stays
inside [0, 1] and keeps near-nominal coverage for the small counts and extreme proportions that
validation sets produce (e.g. 0 false negatives out of 12). F1 is not a binomial proportion, so
its interval comes from the patient-cluster bootstrap: per-patient TP/FP/FN counts are summed per
resample (one thin product), and the percentile interval is taken over resamples where F1 is
defined. A metric whose denominator is 0 (e.g. sensitivity with no positives) is ``None``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from statsmodels.stats.proportion import proportion_confint

from medflow.evaluate._common import as_binary, as_scores, check_level
from medflow.evaluate.bootstrap import PatientBootstrap, group_codes, group_totals, percentile_ci

Interval = list[float] | None


def confusion(y: ArrayLike, p: ArrayLike, threshold: float) -> dict[str, int]:
    """TP/FP/TN/FN when a sample is called positive at ``p >= threshold``."""
    yy = as_binary(y)
    called = as_scores(p, yy.shape[0]) >= threshold
    pos = yy == 1
    return {
        "tp": int(np.sum(called & pos)),
        "fp": int(np.sum(called & ~pos)),
        "tn": int(np.sum(~called & ~pos)),
        "fn": int(np.sum(~called & pos)),
    }


def wilson_ci(count: int, nobs: int, level: float = 0.95) -> Interval:
    """Wilson score interval for ``count`` successes out of ``nobs`` (None when ``nobs`` is 0)."""
    if nobs <= 0:
        return None
    lo, hi = proportion_confint(count, nobs, alpha=1.0 - check_level(level), method="wilson")
    return [float(lo), float(hi)]


def _proportion(count: int, nobs: int, level: float) -> dict:
    return {
        "value": count / nobs if nobs else None,
        "ci": wilson_ci(count, nobs, level),
        "count": count,
        "nobs": nobs,
        "method": "wilson",
    }


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    den = 2.0 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * tp / np.where(den > 0, den, 1.0), np.nan)


def f1_bootstrap(
    y: ArrayLike,
    p: ArrayLike,
    threshold: float,
    groups: ArrayLike | None = None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """F1 at ``threshold`` with a patient-cluster percentile bootstrap interval."""
    level = check_level(level)
    yy = as_binary(y)
    called = (as_scores(p, yy.shape[0]) >= threshold).astype(np.int64)
    if groups is None:
        codes, n_groups = np.arange(yy.shape[0], dtype=np.intp), yy.shape[0]
    else:
        codes, n_groups = group_codes(groups)
    per_row = np.stack([called * yy, called * (1 - yy), (1 - called) * yy], axis=1)
    per_group = np.zeros((n_groups, 3), dtype=np.int64)
    np.add.at(per_group, codes, per_row)
    tp, fp, fn = per_group.sum(axis=0)
    value = _f1(np.array([tp]), np.array([fp]), np.array([fn]))[0]
    out = {
        "value": None if np.isnan(value) else float(value),
        "ci": None,
        "method": "patient-cluster percentile bootstrap",
        "n_boot": 0,
        "n_undefined": 0,
    }
    if n_groups == 0 or np.isnan(value) or n_boot <= 0:
        return out
    boot = PatientBootstrap(codes, n_groups, n_boot, seed)
    totals = boot.map(lambda counts: group_totals(counts, per_group))
    values = _f1(totals[:, 0], totals[:, 1], totals[:, 2])
    ok = ~np.isnan(values)
    out.update(
        ci=percentile_ci(values[ok], level) if ok.any() else None,
        n_boot=int(ok.sum()),
        n_undefined=int((~ok).sum()),
    )
    return out


def classification_metrics(
    y: ArrayLike,
    p: ArrayLike,
    threshold: float,
    groups: ArrayLike | None = None,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Confusion counts and the six threshold metrics, each as ``{value, ci, ...}``."""
    c = confusion(y, p, threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    return {
        "threshold": float(threshold),
        "confusion": c,
        "sensitivity": _proportion(tp, tp + fn, level),
        "specificity": _proportion(tn, tn + fp, level),
        "ppv": _proportion(tp, tp + fp, level),
        "npv": _proportion(tn, tn + fn, level),
        "accuracy": _proportion(tp + tn, tp + fp + tn + fn, level),
        "f1": f1_bootstrap(y, p, threshold, groups, n_boot=n_boot, level=level, seed=seed),
    }
