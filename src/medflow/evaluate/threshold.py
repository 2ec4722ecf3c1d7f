"""Operating threshold chosen on validation data: the Youden point of the ROC curve.

Heads pick their threshold on the *validation* split and the report applies it unchanged to
test / external data, so the rule has to be stable and explicit:

* a sample is called positive when ``p >= t``;
* among the ROC points that maximise J = sensitivity + specificity − 1, the middle one is taken
  (lower median when their number is even), so a plateau of equally good cut-offs does not pull
  the threshold to its edge;
* the returned ``t`` is the midpoint between the chosen cut's lowest positive-called score and the
  next lower distinct score: any value in that gap classifies the validation data identically,
  and the midpoint does not sit exactly on a validation sample's score;
* a validation set holding one class (or no rows) has no ROC curve: the function returns 0.5 and
  emits :class:`DegenerateThresholdWarning` rather than crashing a training run on a tiny split.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve

from medflow.evaluate._common import as_scores

log = logging.getLogger(__name__)

FALLBACK = 0.5


class DegenerateThresholdWarning(UserWarning):
    """The threshold could not be estimated (one class or no labelled rows); 0.5 was used."""


def youden_threshold(y: ArrayLike, p: ArrayLike) -> float:
    """Threshold maximising sensitivity + specificity − 1 on ``(y, p)``; NaN labels are ignored."""
    yy = np.asarray(y, dtype=float).ravel()
    pp = as_scores(p, yy.shape[0])
    known = ~np.isnan(yy)
    yy, pp = yy[known], pp[known]
    if yy.size == 0 or np.unique(yy).size < 2:
        warnings.warn(
            f"Youden threshold needs both classes ({yy.size} labelled rows, classes "
            f"{sorted(set(yy.tolist()))}); using {FALLBACK}",
            DegenerateThresholdWarning,
            stacklevel=2,
        )
        return FALLBACK
    if not np.isin(yy, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    fpr, tpr, cuts = roc_curve(yy, pp, drop_intermediate=False)
    j = tpr - fpr
    best = np.flatnonzero(np.isclose(j, j.max(), rtol=0.0, atol=1e-12))
    i = int(best[(best.size - 1) // 2])
    distinct = np.unique(pp)  # ascending
    if not np.isfinite(cuts[i]):  # the "call nobody positive" point: cut above the top score
        return float(np.nextafter(distinct[-1], np.inf))
    k = int(np.searchsorted(distinct, cuts[i]))
    if k == 0:  # everybody positive: any cut at or below the lowest score
        return float(distinct[0])
    return float((distinct[k - 1] + distinct[k]) / 2.0)


def validation_thresholds(predictions: pd.DataFrame) -> dict[str, float]:
    """Youden-J threshold per task on the ``val`` rows (0.5, with a warning, where val has one class)."""
    out = {}
    for task, rows in predictions.groupby("task"):
        val = rows[(rows["split"] == "val") & rows["y_true"].notna() & rows["y_prob"].notna()]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DegenerateThresholdWarning)
            out[str(task)] = float(youden_threshold(val["y_true"].to_numpy(float), val["y_prob"].to_numpy(float)))
        for warning in caught:
            log.warning("task %s: %s", task, warning.message)
    return out
