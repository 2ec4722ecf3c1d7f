"""DataLoaders whose every epoch is a pure function of (seed, epoch).

Shuffling order comes from the loader's generator, and so do the seeds of its workers (torch seeds
worker w with base + w, base drawn from that generator when the workers start), which seed the
augmentations (without workers: see :class:`SeededLoader`). :func:`set_epoch` reseeds the generator from (seed, epoch) before each epoch, so
epoch k of a resumed run reads and augments exactly what an uninterrupted run did.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class SeededLoader(DataLoader):
    """A DataLoader that remembers the seed :func:`set_epoch` derives each epoch's generator from.

    Without workers, the dataset runs in this process: it then draws from a torch RNG stream of its
    own, seeded from the loader's generator like a worker, so that its augmentations follow
    (seed, epoch) and never shift the training loop's draws (dropout), nor the reverse.
    """

    seed: int

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        if self.num_workers > 0:
            return batches
        seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))
        return _OwnRng(batches, seed)


class _OwnRng:
    """``batches`` fetched with torch's global CPU RNG swapped for a stream of their own."""

    def __init__(self, batches: Iterator[Any], seed: int) -> None:
        self.batches = batches
        self.state = torch.Generator().manual_seed(seed).get_state()

    def __iter__(self) -> _OwnRng:
        return self

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __next__(self) -> Any:
        outer = torch.get_rng_state()
        torch.set_rng_state(self.state)
        try:
            return next(self.batches)
        finally:
            self.state = torch.get_rng_state()
            torch.set_rng_state(outer)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed of (seed, epoch), unrelated for neighbouring values of either."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed, so that code
    using either in a worker is as reproducible as torch's own draws."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    workers: int,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent: bool = False,
    collate_fn: Any = None,
) -> SeededLoader:
    """A loader over ``dataset``; with ``sampler``, ``shuffle`` is the sampler's business. A fresh
    loader's first iteration is epoch 0.

    ``persistent`` keeps the workers (and their open HDF5 files) from one pass to the next: right
    for a loader read the same way every time (validation, inference), wrong for one that is
    reseeded per epoch — torch seeds workers only when they start, so persistent workers would
    carry the random state of earlier epochs and a resumed run would augment differently.
    """
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, 0))
    loader = SeededLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        worker_init_fn=seed_worker,
        persistent_workers=persistent and workers > 0,
        drop_last=drop_last,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
    )
    loader.seed = seed
    return loader


def set_epoch(loader: Any, epoch: int) -> None:
    """Make ``loader``'s next iteration epoch ``epoch``: its sampler's ``set_epoch`` if it has one
    and, for a :func:`make_loader` loader, its generator reseeded from (seed, epoch)."""
    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if not isinstance(loader, SeededLoader):
        return
    loader.generator.manual_seed(epoch_seed(loader.seed, epoch))
