"""Input checks shared by the evaluation modules.

Every public function takes plain arrays; these helpers make sure a stray NaN or a label of 2 fails
loudly here instead of silently producing a wrong AUC several layers down.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm


def as_binary(y: ArrayLike) -> NDArray[np.int8]:
    """Labels as int8 0/1; NaN is refused (callers drop unknown labels before computing)."""
    arr = np.asarray(y, dtype=float).ravel()
    if np.isnan(arr).any():
        raise ValueError("labels contain NaN; drop unknown labels first")
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    return arr.astype(np.int8)


def as_scores(p: ArrayLike, n: int) -> NDArray[np.float64]:
    """Scores as finite float64 of length ``n`` (the labels' length)."""
    arr = np.asarray(p, dtype=float).ravel()
    if arr.shape[0] != n:
        raise ValueError(f"scores have {arr.shape[0]} values, labels {n}")
    if not np.isfinite(arr).all():
        raise ValueError("scores must be finite")
    return arr


def check_level(level: float) -> float:
    """Confidence level in (0, 1); returned as float so it can go straight into JSON."""
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return level


def z_value(level: float) -> float:
    """Two-sided normal quantile for ``level`` (1.959964 for 0.95)."""
    return float(norm.ppf(0.5 + check_level(level) / 2.0))
