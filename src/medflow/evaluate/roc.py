"""AUROC with DeLong variance, computed with the fast midrank algorithm of Sun & Xu (2014).

DeLong's variance needs, for every positive, the share of negatives it outranks (and vice versa).
Done naively that is an O(m·n) comparison matrix; Sun & Xu showed the same "structural
components" fall out of three midrank vectors (pooled, positives only, negatives only), so the
whole computation is a few sorts: O(n log n), fine for 10⁵–10⁶ rows.

DeLong treats rows as independent. With several rows per patient it understates the variance;
the patient-cluster bootstrap (:mod:`medflow.evaluate.bootstrap`) is the clustered alternative.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm, rankdata

from medflow.evaluate._common import as_binary, as_scores, z_value


def _components(y: NDArray[np.int8], scores: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray]:
    """AUCs (k,) and structural components V10 (k × m positives), V01 (k × n negatives).

    ``scores`` is k × N (one row per model). Midranks make tied scores count one half, exactly as
    in the Mann-Whitney form of the AUC.
    """
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError(f"AUC needs both classes (got {m} positives, {n} negatives)")
    pooled = rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks, ties averaged
    rank_pos = rankdata(pos, axis=1)
    rank_neg = rankdata(neg, axis=1)
    # (pooled rank − within-class rank) of a positive = number of negatives below it (ties ½).
    v10 = (pooled[:, :m] - rank_pos) / n
    # likewise for a negative: positives below it; the component is the share of positives above.
    v01 = 1.0 - (pooled[:, m:] - rank_neg) / m
    auc = v10.mean(axis=1)
    return auc, v10, v01


def _covariance(v10: NDArray, v01: NDArray) -> NDArray[np.float64]:
    """DeLong covariance of the k AUCs: S10/m + S01/n (unbiased sample covariances)."""
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((v10.shape[0],) * 2)
    s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((v01.shape[0],) * 2)
    return s10 / m + s01 / n


def delong(y: ArrayLike, p: ArrayLike) -> tuple[float, float]:
    """AUROC and its DeLong variance for one score vector (labels 0/1, no NaN)."""
    yy = as_binary(y)
    pp = as_scores(p, yy.shape[0])
    auc, v10, v01 = _components(yy, pp[None, :])
    return float(auc[0]), float(_covariance(v10, v01)[0, 0])


def delong_ci(y: ArrayLike, p: ArrayLike, level: float = 0.95) -> dict[str, float | list[float]]:
    """AUROC with a Wald interval from the DeLong variance: AUC ± z·SE, clipped to [0, 1].

    The interval is on the AUC scale (what pROC's ``ci.auc(method="delong")`` reports) so numbers
    can be compared with published ones; near 0 or 1 the clip replaces the overshoot a logit-scale
    interval would avoid. With perfect separation the variance is 0 and the interval collapses to
    the point, which is a known limitation of DeLong, not a bug.
    """
    auc, var = delong(y, p)
    half = z_value(level) * np.sqrt(max(var, 0.0))
    return {
        "auc": auc,
        "variance": var,
        "se": float(np.sqrt(max(var, 0.0))),
        "ci": [float(max(0.0, auc - half)), float(min(1.0, auc + half))],
        "level": level,
    }


def delong_paired(
    y: ArrayLike, p_a: ArrayLike, p_b: ArrayLike, level: float = 0.95
) -> dict[str, float | list[float]]:
    """DeLong test for two correlated ROC curves scored on the same samples.

    Returns both AUCs, their difference (a − b), the z statistic, the two-sided p-value and a Wald
    interval for the difference (not clipped: a difference lives in [−1, 1] and the interval is
    only a normal approximation anyway). When both curves are identical the variance is 0: z is
    reported as 0 and p as 1.
    """
    yy = as_binary(y)
    n = yy.shape[0]
    scores = np.vstack([as_scores(p_a, n), as_scores(p_b, n)])
    auc, v10, v01 = _components(yy, scores)
    cov = _covariance(v10, v01)
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0:
        z = diff / se
        p_value = float(2.0 * norm.sf(abs(z)))
    else:  # no sampling variability left: identical curves (p = 1) or a difference with zero SE
        z = 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
        p_value = 1.0 if diff == 0 else 0.0
    half = z_value(level) * se
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "diff": diff,
        "variance": var,
        "z": float(z),
        "p_value": p_value,
        "ci": [diff - half, diff + half],
        "level": level,
    }
