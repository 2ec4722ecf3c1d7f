"""The features file (docs/contracts.md, "features"): ``sample_id``, ``features`` float32 N×D (S×D
for sequences, with ``offsets`` N+1), written atomically. No torch here: heads that do not train
networks read these files without paying for a torch import."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import medflow
from medflow.ingest.h5out import utf8
from medflow.io.atomic import atomic_path


def write_features(
    path: str | Path,
    sample_ids: Sequence[str],
    features: np.ndarray,
    *,
    offsets: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
) -> None:
    """The features contract: ``sample_id`` (N), ``features`` (N×D or S×D for slice stacks) float32,
    ``offsets`` (N+1) for slice stacks; written atomically."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    n_rows = len(sample_ids) if offsets is None else int(offsets[-1])
    if features.ndim != 2 or len(features) != n_rows:
        raise ValueError(f"features of shape {features.shape} do not match {n_rows} rows")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("sample_id", data=utf8(sample_ids))
        f.create_dataset("features", data=features, chunks=(min(max(len(features), 1), 256), features.shape[1]))
        if offsets is not None:
            f.create_dataset("offsets", data=np.asarray(offsets, dtype=np.int64))
        f.attrs["medflow_version"] = medflow.__version__
        f.attrs["feature_dim"] = features.shape[1]
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def read_features(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(sample ids, features, offsets or None) of a features file."""
    with h5py.File(path, "r") as f:
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["sample_id"][:]]
        offsets = f["offsets"][:] if "offsets" in f else None
        return ids, f["features"][:], offsets
