"""Class-balanced sampling for rare positives (PE slices, CLNM)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class BalancedSampler(Sampler[int]):
    """Every epoch: all positives plus the next block of negatives, shuffled together.

    The negatives are one list shuffled once from ``seed``; epoch e takes the e-th block of
    ``round(n_pos · negatives_per_positive)`` of them (wrapping round), so successive epochs see
    different negatives and ceil(n_neg / block) epochs see them all — the published RSNA-PE
    scheme. An epoch's items are a pure function of (seed, epoch): call :meth:`set_epoch` (the
    loader's ``set_epoch`` does) and a resumed run samples exactly what an uninterrupted one
    would. Without it, each iteration moves on to the next epoch. Labels that are nan are never
    sampled.
    """

    def __init__(self, labels: np.ndarray, *, seed: int, negatives_per_positive: float = 1.0) -> None:
        labels = np.asarray(labels, dtype=np.float64)
        known = labels[~np.isnan(labels)]
        if not np.isin(known, (0.0, 1.0)).all():
            raise ValueError(f"BalancedSampler needs 0/1 labels (nan = unlabelled), found {np.unique(known)[:5]}")
        if negatives_per_positive <= 0:
            raise ValueError(f"negatives_per_positive must be > 0, not {negatives_per_positive}")
        self.positives = np.flatnonzero(labels == 1)
        if len(self.positives) == 0:
            raise ValueError("BalancedSampler needs at least one positive label")
        negatives = np.flatnonzero(labels == 0)
        self.negatives = np.random.default_rng([seed, 0]).permutation(negatives)
        self.block = min(len(negatives), round(len(self.positives) * negatives_per_positive))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Sample epoch ``epoch`` next."""
        self.epoch = int(epoch)

    def indices(self, epoch: int) -> np.ndarray:
        """The items of ``epoch``, in order."""
        n = len(self.negatives)
        take = self.negatives[(epoch * self.block + np.arange(self.block)) % n] if n else self.negatives
        chosen = np.concatenate([self.positives, take])
        return np.random.default_rng([self.seed, 1, epoch]).permutation(chosen)

    def __iter__(self) -> Iterator[int]:
        order = self.indices(self.epoch)
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self) -> int:
        return len(self.positives) + self.block


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s share of an epoch for data-parallel training.

    Every rank computes the same epoch order — the ``base`` sampler's items, or a permutation of
    ``range(n)`` drawn from (seed, epoch) — and takes every ``world_size``-th item from position
    ``rank``; the order is padded by wrapping round so all ranks run the same number of steps.
    """

    def __init__(
        self, n: int, *, rank: int, world_size: int, seed: int, shuffle: bool = True, base: Sampler | None = None
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.n, self.rank, self.world_size, self.seed, self.shuffle, self.base = n, rank, world_size, seed, shuffle, base
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def _order(self) -> np.ndarray:
        if self.base is not None:
            return np.fromiter(iter(self.base), dtype=np.int64)
        if self.shuffle:
            return np.random.default_rng([self.seed, 2, self.epoch]).permutation(self.n)
        return np.arange(self.n)

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        total = len(self) * self.world_size
        padded = np.resize(order, total) if len(order) else order
        self.epoch += 1
        return iter(padded[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        n = len(self.base) if self.base is not None else self.n
        return -(-n // self.world_size)
