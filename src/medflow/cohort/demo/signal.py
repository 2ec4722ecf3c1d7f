"""Planted-signal maths: labels, latent scores and the oracle AUCs they imply.

Every modality m of a sample gets a latent score s_m = d_m * y + e_m with e_m ~ N(0, 1) independent
across modalities. The generators render s_m (and nothing else about y) into the raw data, so y is
conditionally independent of the data given the latents and the Bayes-optimal classifier on a set of
modalities M scores sum_m d_m * s_m. Its AUC is Phi(sqrt(sum_m d_m^2) / sqrt(2)): this is the best any
model can do, and rendering noise can only lower what a model reaches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata


def draw_labels(rng: np.random.Generator, n: int, prevalence: float) -> np.ndarray:
    """0/1 labels with exactly round(prevalence * n) positives (at least one of each class when n ≥ 2).

    An exact count keeps small demo cohorts stratifiable; which samples are positive is random.
    """
    k = round(prevalence * n)
    if n >= 2:
        k = min(max(k, 1), n - 1)
    y = np.zeros(n, dtype=np.int64)
    y[rng.choice(n, size=k, replace=False)] = 1
    return y


def latent(rng: np.random.Generator, y: np.ndarray, d: float) -> np.ndarray:
    """s = d * y + N(0, 1): one modality's latent score per sample."""
    return d * y + rng.standard_normal(len(y))


def oracle_auc(ds: Sequence[float]) -> float:
    """Best achievable AUC from modalities with separations ``ds`` (independent unit-variance noise)."""
    return float(ndtr(math.sqrt(sum(d * d for d in ds)) / math.sqrt(2.0)))


def empirical_auc(score: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUC of ``score`` for labels ``y`` (ties count one half); NaN if a class is empty."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def task_oracle(
    y: np.ndarray,
    target_prevalence: float,
    d: Mapping[str, float],
    latents: Mapping[str, np.ndarray],
    fused_sets: Mapping[str, Sequence[str]],
) -> dict:
    """The oracle.json entry of one task: theoretical AUCs and the latents' AUCs on the drawn samples."""
    fused_theory = {name: round(oracle_auc([d[m] for m in mods]), 4) for name, mods in fused_sets.items()}
    fused_empirical = {
        name: round(empirical_auc(sum(d[m] * latents[m] for m in mods), y), 4)
        for name, mods in fused_sets.items()
    }
    return {
        "prevalence": round(float(np.mean(y)), 4),
        "target_prevalence": target_prevalence,
        "n": len(y),
        "n_positive": int(np.sum(y)),
        "d": dict(d),
        "modalities": {m: round(oracle_auc([d[m]]), 4) for m in d},
        "fused": fused_theory,
        "empirical": {
            "modalities": {m: round(empirical_auc(latents[m], y), 4) for m in d},
            "fused": fused_empirical,
        },
    }
