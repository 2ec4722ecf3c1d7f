"""Torch datasets over the ingest HDF5 files (docs/contracts.md).

Items are found by ``sample_id`` through the file's own ``sample_id`` dataset, never by row
position, so a split or label table in any order reads the right pixels. The file is opened
lazily in the process that reads (a DataLoader worker, forked or spawned) and never pickled:
HDF5 handles must not cross a fork, and cannot be pickled at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from medflow.data.intensity import Intensity


class _H5Base(Dataset):
    """Lazy, fork- and pickle-safe access to one ingest file."""

    def __init__(self, path: str | Path, intensity: Intensity, augment: Callable | None) -> None:
        self.path = Path(path)
        self.intensity = intensity
        self.augment = augment
        self._file: h5py.File | None = None
        self._pid = -1

    def _read_index(
        self, sample_ids: Sequence[str], kinds: tuple[str, ...], extra: Sequence[str] = ()
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """File rows of ``sample_ids`` plus the small datasets named in ``extra``; closes the file."""
        with h5py.File(self.path, "r") as f:
            self.kind = str(f.attrs.get("kind", ""))
            if self.kind not in kinds:
                other = "H5Slices" if self.kind == "slices" else "H5Samples"
                raise ValueError(f"{self.path} is of kind {self.kind!r}, which {type(self).__name__} does not read: use {other}")
            self.units = str(f.attrs.get("units", "raw"))
            self.window = tuple(float(v) for v in f.attrs["window"]) if "window" in f.attrs else None
            self.has_mask = "masks" in f
            file_ids = f["sample_id"].asstr()[()].tolist()
            small = {name: f[name][()] for name in extra}
        position = {sid: i for i, sid in enumerate(file_ids)}
        if len(position) != len(file_ids):
            raise ValueError(f"{self.path}: sample_id holds duplicates")
        unknown = [s for s in map(str, sample_ids) if s not in position]
        if unknown:
            raise KeyError(
                f"{len(unknown)} sample id(s) are not in {self.path}, e.g. {', '.join(unknown[:5])}"
                " (left out by ingest? see its problems.csv)"
            )
        return np.array([position[str(s)] for s in sample_ids], dtype=np.int64), small

    @staticmethod
    def _labels(labels: Sequence[float] | None, n: int) -> np.ndarray:
        if labels is None:
            return np.full(n, np.nan)
        out = np.asarray(labels, dtype=np.float64)
        if out.shape != (n,):
            raise ValueError(f"{len(out)} labels for {n} samples")
        return out

    def _h5(self) -> h5py.File:
        # A handle inherited through fork is the parent's: open our own.
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            self._images = self._file["images"]  # looked up once per open file, not per item
        return self._file

    def _finish(self, x: np.ndarray, mask: np.ndarray | None = None) -> torch.Tensor:
        """Normalise the image channels, append the mask (untouched), augment."""
        x = self.intensity(x, self.units, self.window)
        if mask is not None:
            x = np.concatenate([x, (mask[None] > 0).astype(np.float32)])
        tensor = torch.from_numpy(np.ascontiguousarray(x))
        return self.augment(tensor) if self.augment is not None else tensor

    def close(self) -> None:
        """Close the file handle of this process (it reopens on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state.pop("_images", None)
        state["_pid"] = -1
        return state


class H5Samples(_H5Base):
    """One item per sample of an ``image``, ``patches`` or ``volume`` file.

    ``x`` is C×H×W (C×D×H×W for volumes); with ``with_mask`` a volume's mask is a last 0/1
    channel. ``y`` is the sample's label (nan without ``labels``).
    """

    def __init__(
        self,
        path: str | Path,
        sample_ids: Sequence[str],
        labels: Sequence[float] | None = None,
        *,
        intensity: Intensity,
        augment: Callable | None = None,
        with_mask: bool = False,
    ) -> None:
        super().__init__(path, intensity, augment)
        self.sample_ids = [str(s) for s in sample_ids]
        self.rows, _ = self._read_index(self.sample_ids, ("image", "patches", "volume"))
        if with_mask and not self.has_mask:
            raise ValueError(f"{self.path} has no masks, but with_mask was asked for")
        self.with_mask = with_mask
        self.labels = self._labels(labels, len(self.sample_ids))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self._h5()
        row = int(self.rows[i])
        image = self._images[row]
        x = image if self.kind == "image" and image.ndim == 3 else image[None]  # RGB images are 3×H×W
        mask = f["masks"][row] if self.with_mask else None
        return {"x": self._finish(x, mask), "y": torch.tensor(self.labels[i], dtype=torch.float32), "index": i}


class H5Slices(_H5Base):
    """One item per slice of a ``slices`` file, for the given samples in their order, each sample's
    slices in stack order. ``y`` is the slice's ``slice_label`` (−1 → nan) or, when ``labels`` (one
    per sample) is given, its sample's label.
    """

    def __init__(
        self,
        path: str | Path,
        sample_ids: Sequence[str],
        labels: Sequence[float] | None = None,
        *,
        intensity: Intensity,
        augment: Callable | None = None,
    ) -> None:
        super().__init__(path, intensity, augment)
        self.sample_ids = [str(s) for s in sample_ids]
        rows, small = self._read_index(self.sample_ids, ("slices",), ("offsets", "slice_label"))
        offsets = small["offsets"].astype(np.int64)
        starts, counts = offsets[rows], offsets[rows + 1] - offsets[rows]
        #: the file's slice index of every item, and the position in ``sample_ids`` it belongs to
        self.slice_sample = np.repeat(np.arange(len(rows)), counts)
        first_item = np.cumsum(counts) - counts
        self.slices = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - first_item, counts)
        if labels is not None:
            self.slice_labels = self._labels(labels, len(rows))[self.slice_sample]
        else:
            raw = small["slice_label"][self.slices].astype(np.float64)
            self.slice_labels = np.where(raw < 0, np.nan, raw)

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self._h5()
        x = self._images[int(self.slices[i])][None]
        return {
            "x": self._finish(x),
            "y": torch.tensor(self.slice_labels[i], dtype=torch.float32),
            "index": i,
            "sample": int(self.slice_sample[i]),
        }
