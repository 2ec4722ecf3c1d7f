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


def features_to_csv(features_path: str | Path, splits_path: str | Path, out_path: str | Path) -> int:
    """The features file as one CSV row per sample (per slice for slice stacks, with its index in
    the stack): ``sample_id, patient_id, split[, slice], f0, f1, …``; ids as written in splits.csv.
    Nothing but ids and numbers goes in (no paths). Returns the number of rows."""
    import pandas as pd

    from medflow.io.contracts import read_contract_csv, write_contract_csv

    ids, feats, offsets = read_features(features_path)
    splits = read_contract_csv(splits_path).set_index("sample_id")
    missing = [s for s in ids if s not in splits.index]
    if missing:
        raise ValueError(f"{len(missing)} sample(s) of the features file are not in splits.csv, e.g. {missing[0]!r}")
    if offsets is None:
        rows, index = np.asarray(ids, dtype=object), None
    else:
        counts = np.diff(offsets)
        rows = np.repeat(np.asarray(ids, dtype=object), counts)
        index = np.concatenate([np.arange(n) for n in counts]) if len(counts) else np.zeros(0, np.int64)
    frame = pd.DataFrame({
        "sample_id": rows,
        "patient_id": splits.loc[rows, "patient_id"].to_numpy(dtype=object) if len(rows) else [],
        "split": splits.loc[rows, "split"].to_numpy(dtype=object) if len(rows) else [],
    })
    if index is not None:
        frame["slice"] = index.astype(np.int64)
    values = pd.DataFrame(feats, columns=[f"f{j}" for j in range(feats.shape[1])])
    write_contract_csv(pd.concat([frame, values], axis=1), out_path)
    return len(frame)
