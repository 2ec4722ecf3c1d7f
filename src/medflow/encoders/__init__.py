"""Encoders of the EHR study's non-image modalities for stage 2, fitted on the training split only.

- :mod:`medflow.encoders.events`: EHR events → a fixed T-step grid per sample (value + measured mask
  per variable, standardised with training statistics).
- :mod:`medflow.encoders.notes`: clinical notes → one doc2vec vector per note, in time order.

Both write the features contract (``docs/contracts.md``) keyed by ``sample_id`` in splits.csv order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medflow.io.contracts import read_contract_csv

__all__ = ["read_splits", "require_columns"]

SPLIT_COLUMNS = ("sample_id", "split")


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    """Raise a ValueError naming every required column ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks required column(s) {missing}; it has {list(frame.columns)}")


def read_splits(path: str | Path) -> pd.DataFrame:
    """splits.csv with ids read as strings (ids such as ``007`` must not become integers), checked
    for the columns the encoders need and for duplicate sample ids."""
    splits = read_contract_csv(path)
    require_columns(splits, SPLIT_COLUMNS, f"splits file {path}")
    if (splits["sample_id"] == "").any():
        raise ValueError(f"splits file {path} has empty sample_id values")
    duplicated = splits["sample_id"][splits["sample_id"].duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"splits file {path} lists sample ids more than once: {duplicated[:5]}")
    return splits
