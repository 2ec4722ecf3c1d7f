"""Patient-cluster bootstrap for AUROC / AUPRC, vectorised over resamples.

Why patients, not rows: a patient with three images contributes three correlated rows; resampling
rows treats them as independent evidence and makes intervals too narrow. Each resample here draws
*patients* with replacement (as many draws as there are patients) and every row of a drawn patient
comes along. A resample is therefore a vector of per-patient counts ``c`` (how often each patient
was drawn), and a metric on the resample equals the metric on the original rows weighted by
``c[patient]``.

Why it is fast: rows are sorted by score once per call. For a block of resamples the weights are
gathered into a (resamples × rows) array; a cumulative sum over the negatives (in score order)
gives, for every positive, the weighted number of negatives below it (ties ½), and one dot product
per resample gives the weighted Mann-Whitney AUROC. Average precision works the same way with
cumulative sums from the top. Blocks run on a small thread pool (NumPy releases the GIL in these
loops). No per-resample sort and no Python loop over resamples.

Degenerate resamples (one class absent) are **redrawn**, so an interval rests on ``n_boot`` usable
resamples; the number redrawn is reported. After 100 redraw rounds any still-degenerate ones are
dropped and counted (only when a class sits in a handful of patients).

Intervals are percentile intervals (``numpy.quantile``, linear interpolation). Block ``i`` draws from
its own generator, ``SeedSequence(seed).spawn(...)[i]``, so results are identical on rerun whatever
the number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from medflow.evaluate._common import as_binary, as_scores, check_level

BLOCK = 16  # resamples per block: small enough that a block's arrays stay in cache
MAX_REDRAW_ROUNDS = 100
METHOD = "patient-cluster percentile bootstrap"

WeightedMetric = Callable[[NDArray, NDArray, NDArray], float]
BlockFn = Callable[[NDArray[np.int32]], NDArray]


def group_codes(groups: ArrayLike) -> tuple[NDArray[np.intp], int]:
    """Patient ids → codes 0..G−1 in sorted-id order (so row order never changes the draws)."""
    values = pd.Series(np.asarray(groups).ravel()).astype(str)
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.intp), len(uniques)


def group_totals(counts: NDArray, per_group: NDArray) -> NDArray:
    """Per-resample totals ``counts @ per_group`` (resamples × patients by patients [× m]).

    Done with einsum, not BLAS: a threaded BLAS inside our own thread pool oversubscribes the
    cores and was several times slower for these thin products.
    """
    dtype = np.int64 if np.issubdtype(per_group.dtype, np.integer) else np.float64
    if per_group.ndim == 1:
        return np.einsum("ij,j->i", counts, per_group, dtype=dtype)
    return np.einsum("ij,jm->im", counts, per_group, dtype=dtype)


def _threads() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, min(os.cpu_count() or 1, 8))


@dataclass
class PatientBootstrap:
    """Patient-count matrices for ``n_boot`` resamples, produced block by block.

    ``codes`` maps rows to patients (0..n_groups−1). With ``y`` given a resample is usable only
    when it holds both classes; unusable ones are redrawn. :meth:`map` applies a function to every
    block's (resamples × patients) int32 count matrix and stacks the results in block order, so
    two metrics mapped with the same object see the same resamples (what keeps paired tests paired).
    """

    codes: NDArray[np.intp]
    n_groups: int
    n_boot: int = 1000
    seed: int = 0
    y: NDArray[np.int8] | None = None
    n_redrawn: int = 0
    n_dropped: int = 0

    def __post_init__(self) -> None:
        if self.n_boot < 1:
            raise ValueError("n_boot must be at least 1")
        if self.y is not None:
            self._pos = np.bincount(self.codes, weights=self.y, minlength=self.n_groups).astype(np.int64)
            self._neg = np.bincount(self.codes, weights=1 - self.y, minlength=self.n_groups).astype(np.int64)

    def _draw(self, rng: np.random.Generator, k: int) -> NDArray[np.int32]:
        """Counts (k × G): k resamples of G patient draws with replacement."""
        g = self.n_groups
        idx = rng.integers(0, g, size=(k, g), dtype=np.int32)  # int32 draws: twice as fast as int64
        out = np.empty((k, g), dtype=np.int32)
        for r in range(k):
            out[r] = np.bincount(idx[r], minlength=g)
        return out

    def _degenerate(self, counts: NDArray[np.int32]) -> NDArray[np.intp]:
        """Resamples (rows of ``counts``) without a positive or without a negative."""
        return np.flatnonzero((group_totals(counts, self._pos) == 0) | (group_totals(counts, self._neg) == 0))

    def _block(self, seed: np.random.SeedSequence, k: int) -> tuple[NDArray[np.int32], int, int]:
        rng = np.random.default_rng(seed)
        counts = self._draw(rng, k)
        redrawn = dropped = 0
        if self.y is None:
            return counts, redrawn, dropped
        for _ in range(MAX_REDRAW_ROUNDS):
            bad = self._degenerate(counts)
            if bad.size == 0:
                return counts, redrawn, dropped
            redrawn += bad.size
            counts[bad] = self._draw(rng, bad.size)
        bad = self._degenerate(counts)
        return np.delete(counts, bad, axis=0), redrawn, bad.size

    def map(self, fn: BlockFn) -> NDArray:
        """``fn(counts)`` for every block, concatenated along the resample axis."""
        sizes = [BLOCK] * (self.n_boot // BLOCK) + ([self.n_boot % BLOCK] if self.n_boot % BLOCK else [])
        seeds = np.random.SeedSequence(self.seed).spawn(len(sizes))

        def run(i: int) -> tuple[NDArray, int, int]:
            counts, redrawn, dropped = self._block(seeds[i], sizes[i])
            return fn(counts), redrawn, dropped

        workers = min(_threads(), len(sizes))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(run, range(len(sizes))))
        else:
            parts = [run(i) for i in range(len(sizes))]
        self.n_redrawn = sum(p[1] for p in parts)
        self.n_dropped = sum(p[2] for p in parts)
        return np.concatenate([p[0] for p in parts], axis=0)

    def matrix(self) -> NDArray[np.int32]:
        """All counts as one (n_boot × G) matrix: for inspection and tests, not for big data."""
        return self.map(lambda counts: counts.copy())


def _cumsum0(w: NDArray[np.int32]) -> NDArray[np.int32]:
    """Row-wise cumulative sum with a leading zero column (index j = sum of the first j).

    Integer on purpose: NumPy's integer cumsum is several times faster than its float one (no
    floating-point add latency chain), and counts are exact.
    """
    out = np.zeros((w.shape[0], w.shape[1] + 1), dtype=w.dtype)
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


class _AurocTable:
    """Rows pre-sorted so a block of weighted AUROCs is a gather, a cumsum and a dot product.

    All sums are integer: ``2 × (negatives below + ½ tied)`` = (count strictly below) + (count at
    or below), so AUROC = Σ w_pos · that / (2 · W_pos · W_neg) is computed exactly.
    """

    def __init__(self, y: NDArray[np.int8], p: NDArray[np.float64], codes: NDArray[np.intp]) -> None:
        is_pos = y == 1
        neg_p = p[~is_pos]
        order = np.argsort(neg_p, kind="stable")
        neg_sorted = neg_p[order]
        self.neg_codes = codes[~is_pos][order]
        self.pos_codes = codes[is_pos]
        self.below = np.searchsorted(neg_sorted, p[is_pos], side="left")  # negatives strictly below
        self.at_or_below = np.searchsorted(neg_sorted, p[is_pos], side="right")
        self.ties = bool(np.any(self.below != self.at_or_below))

    def __call__(self, counts: NDArray[np.int32]) -> NDArray[np.float64]:
        cum_neg = _cumsum0(np.take(counts, self.neg_codes, axis=1))
        if self.ties:
            below2 = cum_neg[:, self.below].astype(np.int64) + cum_neg[:, self.at_or_below]
        else:
            below2 = 2 * cum_neg[:, self.below].astype(np.int64)
        w_pos = np.take(counts, self.pos_codes, axis=1)
        num = np.einsum("ij,ij->i", w_pos, below2, dtype=np.int64)
        den = 2.0 * w_pos.sum(axis=1, dtype=np.int64) * cum_neg[:, -1].astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den


class _AuprcTable:
    """Weighted average precision (scikit-learn's definition) for a block of resamples.

    AP = Σ over positives of w_i · precision(s_i) / Σ w_i, where precision(s) is the weighted share
    of positives among rows scoring ≥ s: identical to the step-wise sum over distinct thresholds.
    """

    def __init__(self, y: NDArray[np.int8], p: NDArray[np.float64], codes: NDArray[np.intp]) -> None:
        is_pos = y == 1
        pos_p, neg_p = p[is_pos], p[~is_pos]
        pos_order = np.argsort(-pos_p, kind="stable")  # descending
        neg_order = np.argsort(-neg_p, kind="stable")
        self.pos_codes = codes[is_pos][pos_order]
        self.neg_codes = codes[~is_pos][neg_order]
        s = pos_p[pos_order]
        # how many positives / negatives score ≥ s (prefix lengths in descending order)
        self.pos_ge = s.size - np.searchsorted(np.sort(pos_p), s, side="left")
        self.neg_ge = neg_p.size - np.searchsorted(np.sort(neg_p), s, side="left")

    def __call__(self, counts: NDArray[np.int32]) -> NDArray[np.float64]:
        w_pos = np.take(counts, self.pos_codes, axis=1)
        tp = _cumsum0(w_pos)[:, self.pos_ge].astype(np.float64)
        fp = _cumsum0(np.take(counts, self.neg_codes, axis=1))[:, self.neg_ge]
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp > 0)
        total = w_pos.sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.einsum("ij,ij->i", w_pos, precision, dtype=np.float64) / total


TABLES = {"auroc": _AurocTable, "auprc": _AuprcTable}


def prepare(y: ArrayLike, p: ArrayLike, groups: ArrayLike | None) -> tuple[NDArray, NDArray, NDArray, int]:
    """Checked labels, scores, patient codes and patient count (``groups`` None: a row is a patient)."""
    yy = as_binary(y)
    pp = as_scores(p, yy.shape[0])
    if groups is None:
        codes, n_groups = np.arange(yy.shape[0], dtype=np.intp), yy.shape[0]
    else:
        codes, n_groups = group_codes(groups)
        if codes.shape[0] != yy.shape[0]:
            raise ValueError("groups and labels differ in length")
    return yy, pp, codes, n_groups


def percentile_ci(values: NDArray[np.float64], level: float) -> list[float]:
    """Percentile interval of bootstrap values (linear interpolation between order statistics)."""
    alpha = 1.0 - level
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return [float(lo), float(hi)]


def _summary(point: float, values: NDArray[np.float64], level: float, boot: PatientBootstrap) -> dict:
    return {
        "value": float(point),
        "ci": percentile_ci(values, level) if values.size else None,
        "se": float(np.std(values, ddof=1)) if values.size > 1 else None,
        "level": level,
        "n_boot": int(values.size),
        "n_redrawn": boot.n_redrawn,
        "n_dropped": boot.n_dropped,
        "n_groups": boot.n_groups,
        "method": METHOD,
    }


def _need_both(y: NDArray[np.int8]) -> None:
    if y.size == 0 or y.min() == y.max():
        raise ValueError("bootstrap of a ranking metric needs both classes in the data")


def bootstrap_auc_ci(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """AUROC with a patient-cluster percentile bootstrap interval (``groups`` None: one row = one patient)."""
    return bootstrap_metric_ci(y, p, groups, metric="auroc", n_boot=n_boot, level=level, seed=seed)


def bootstrap_cis(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    metrics: tuple[str, ...] = ("auroc", "auprc"),
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """Several ranking metrics on the *same* patient resamples (one draw, one pass).

    The report needs AUROC and AUPRC per split; drawing once halves the cost and keeps the two
    intervals consistent with each other.
    """
    level = check_level(level)
    yy, pp, codes, n_groups = prepare(y, p, groups)
    _need_both(yy)
    unknown = set(metrics) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; use {sorted(TABLES)}")
    tables = [TABLES[m](yy, pp, codes) for m in metrics]
    ones = np.ones((1, n_groups), dtype=np.int32)
    points = [float(t(ones)[0]) for t in tables]
    boot = PatientBootstrap(codes, n_groups, n_boot, seed, yy)
    values = boot.map(lambda c: np.stack([t(c) for t in tables], axis=1))
    out = {}
    for j, name in enumerate(metrics):
        out[name] = _summary(points[j], values[:, j], level, boot)
        out[name]["metric"] = name
    return out


def bootstrap_metric_ci(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    metric: str | WeightedMetric = "auprc",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """A ranking metric with a patient-cluster percentile bootstrap interval.

    ``metric`` is ``"auroc"`` or ``"auprc"`` (average precision as scikit-learn defines it: the
    step-wise sum of precision × recall increments, no interpolation), both vectorised; or a
    callable ``f(y, p, sample_weight) -> float`` evaluated once per resample with the patient
    counts as weights (slow but general, e.g. a weighted Brier score).
    """
    if not callable(metric):
        return bootstrap_cis(y, p, groups, metrics=(metric,), n_boot=n_boot, level=level, seed=seed)[metric]
    level = check_level(level)
    yy, pp, codes, n_groups = prepare(y, p, groups)
    _need_both(yy)
    boot = PatientBootstrap(codes, n_groups, n_boot, seed, yy)
    point = float(metric(yy, pp, np.ones(yy.shape[0])))
    values = boot.map(lambda c: np.array([metric(yy, pp, row[codes]) for row in c], dtype=float))
    out = _summary(point, values, level, boot)
    out["metric"] = getattr(metric, "__name__", "custom")
    return out


def paired_bootstrap_delta_auc(
    y: ArrayLike,
    p_a: ArrayLike,
    p_b: ArrayLike,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """ΔAUROC (a − b) on the same rows, with both models scored on the *same* patient resamples.

    The two-sided p-value is the bootstrap tail share: 2 · min(P*(Δ ≤ 0), P*(Δ ≥ 0)) with the
    (1 + count)/(1 + B) correction so it is never exactly 0, capped at 1.
    """
    level = check_level(level)
    yy, pa, codes, n_groups = prepare(y, p_a, groups)
    pb = as_scores(p_b, yy.shape[0])
    _need_both(yy)
    boot = PatientBootstrap(codes, n_groups, n_boot, seed, yy)
    ta, tb = _AurocTable(yy, pa, codes), _AurocTable(yy, pb, codes)
    ones = np.ones((1, n_groups), dtype=np.int32)
    auc_a, auc_b = float(ta(ones)[0]), float(tb(ones)[0])
    deltas = boot.map(lambda c: ta(c) - tb(c))
    tail = min(int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0)))
    p_value = min(1.0, 2.0 * (1.0 + tail) / (1.0 + deltas.size))
    out = _summary(auc_a - auc_b, deltas, level, boot)
    out.update(auc_a=auc_a, auc_b=auc_b, p_value=float(p_value))
    return out
