"""Decision-curve analysis (Vickers & Elkin 2006): is acting on the model worth it?

At a threshold probability t a clinician treats when p ≥ t; choosing t states how many false
positives one true positive is worth (odds t / (1 − t)). Net benefit per patient is

    NB(t) = TP(t)/n − FP(t)/n · t / (1 − t)

and is compared with *treat all* (NB = prevalence − (1 − prevalence) · t / (1 − t)) and *treat
none* (NB = 0). A model is useful at t only where its curve lies above both.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from medflow.evaluate._common import as_binary, as_scores

DEFAULT_THRESHOLDS = np.round(np.arange(1, 100) / 100.0, 2)  # 0.01 … 0.99


def net_benefit(y: ArrayLike, p: ArrayLike, thresholds: ArrayLike | None = None) -> dict[str, list[float]]:
    """Net benefit of the model, treat-all and treat-none over ``thresholds`` (each in (0, 1))."""
    yy = as_binary(y)
    pp = as_scores(p, yy.shape[0])
    t = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=float).ravel()
    if t.size and (t.min() <= 0.0 or t.max() >= 1.0):
        raise ValueError("decision-curve thresholds must lie strictly between 0 and 1")
    n = yy.size
    if n == 0:
        empty = [None] * t.size
        return {"thresholds": t.tolist(), "model": empty, "treat_all": empty, "treat_none": [0.0] * t.size}
    pos = np.sort(pp[yy == 1])
    neg = np.sort(pp[yy == 0])
    tp = pos.size - np.searchsorted(pos, t, side="left")  # positives with p ≥ t
    fp = neg.size - np.searchsorted(neg, t, side="left")
    odds = t / (1.0 - t)
    prevalence = pos.size / n
    model = tp / n - fp / n * odds
    treat_all = prevalence - (1.0 - prevalence) * odds
    return {
        "thresholds": t.tolist(),
        "model": model.tolist(),
        "treat_all": treat_all.tolist(),
        "treat_none": [0.0] * t.size,
    }
