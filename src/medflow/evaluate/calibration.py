"""Calibration: reliability curve, Brier score, calibration intercept and slope.

Discrimination (AUROC) says nothing about whether a predicted 30 % means 30 %. The standard
summary (Van Calster et al. 2019, "Calibration: the Achilles heel of predictive analytics") is:

* **calibration intercept** (calibration-in-the-large): α in logit P(y=1) = α + logit(p), i.e. a
  logistic model with logit(p) as a fixed offset; 0 is ideal, > 0 means risks are too low overall;
* **calibration slope**: β in logit P(y=1) = a + β·logit(p); 1 is ideal, < 1 means predictions are
  too extreme (overconfident, typical of overfitting), > 1 too timid;
* the reliability curve with quantile bins (equal numbers of samples per bin, so sparse extreme
  bins do not dominate the picture) and the Brier score.

Both logistic fits use statsmodels GLM (binomial, logit link) and report Wald intervals.
Probabilities are clipped to [1e-6, 1 − 1e-6] before the logit so a hard 0/1 output stays finite.
"""

from __future__ import annotations

import warnings

import numpy as np
import statsmodels.api as sm
from numpy.typing import ArrayLike
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss
from statsmodels.tools.sm_exceptions import (
    ConvergenceWarning,
    HessianInversionWarning,
    PerfectSeparationError,
    PerfectSeparationWarning,
)

from medflow.evaluate._common import as_binary, as_scores, check_level

EPS = 1e-6


def logit(p: ArrayLike) -> np.ndarray:
    """log(p / (1 − p)) after clipping p to [EPS, 1 − EPS]."""
    q = np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Mean squared difference between predicted probability and outcome (scikit-learn)."""
    yy = as_binary(y)
    return float(brier_score_loss(yy, as_scores(p, yy.shape[0])))


def reliability_curve(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> dict[str, list[float]]:
    """Mean predicted probability vs observed fraction of positives per quantile bin.

    Fewer than ``n_bins`` points come back when tied probabilities merge bin edges.
    """
    yy = as_binary(y)
    pp = np.clip(as_scores(p, yy.shape[0]), 0.0, 1.0)
    if yy.size == 0:
        return {"mean_predicted": [], "fraction_positive": []}
    frac, mean = calibration_curve(yy, pp, n_bins=n_bins, strategy="quantile")
    return {"mean_predicted": mean.tolist(), "fraction_positive": frac.tolist()}


# statsmodels reports separation and non-convergence as warnings; for us they mean "no estimate"
FIT_FAILURES = (PerfectSeparationWarning, ConvergenceWarning, HessianInversionWarning, RuntimeWarning)


def _fit(
    y: np.ndarray, exog: np.ndarray, offset: np.ndarray | None, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """GLM binomial fit; raises ValueError when it does not converge to finite estimates."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.GLM(y, exog, family=sm.families.Binomial(), offset=offset).fit()
        except (PerfectSeparationError, np.linalg.LinAlgError, ValueError) as exc:
            raise ValueError(f"logistic fit failed: {exc}") from exc
    failures = [w for w in caught if issubclass(w.category, FIT_FAILURES)]
    if failures:
        raise ValueError(f"logistic fit failed: {failures[0].message}")
    if not res.converged:
        raise ValueError("logistic fit did not converge")
    params, ci = np.asarray(res.params), np.asarray(res.conf_int(alpha=1.0 - level))
    if not (np.isfinite(params).all() and np.isfinite(ci).all()):
        raise ValueError("logistic fit gave non-finite estimates")
    return params, ci


def calibration_intercept_slope(y: ArrayLike, p: ArrayLike, level: float = 0.95) -> dict:
    """Calibration intercept (offset model) and slope, each with a Wald interval.

    Values are ``None`` with a ``reason`` when the fit is impossible (one class, or predictions
    that separate the classes perfectly, where the slope is infinite).
    """
    level = check_level(level)
    yy = as_binary(y).astype(float)
    lp = logit(as_scores(p, yy.shape[0]))
    out: dict = {
        "intercept": None,
        "intercept_ci": None,
        "slope": None,
        "slope_ci": None,
        "reason": None,
        "level": level,
    }
    if yy.size == 0 or yy.min() == yy.max():
        out["reason"] = "calibration fit needs both classes"
        return out
    try:
        a, a_ci = _fit(yy, np.ones((yy.size, 1)), lp, level)
        b, b_ci = _fit(yy, sm.add_constant(lp, has_constant="add"), None, level)
    except ValueError as exc:
        out["reason"] = str(exc)
        return out
    out.update(
        intercept=float(a[0]), intercept_ci=a_ci[0].tolist(), slope=float(b[1]), slope_ci=b_ci[1].tolist()
    )
    return out
