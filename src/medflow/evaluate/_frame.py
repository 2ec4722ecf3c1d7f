"""predictions.csv handling shared by the report and the head comparison.

Results must not depend on row order (the contracts join on ids), so frames are put in a
canonical order (task, split, sample_id) before any floating-point sum is taken; and a report
must be strict JSON, so NaN / inf / NumPy scalars are converted on the way out.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from medflow.io.contracts import PREDICTION_COLUMNS as COLUMNS
from medflow.io.contracts import PREDICTION_ID_COLUMNS as ID_COLUMNS
from medflow.io.contracts import ordered_splits as ordered_splits
from medflow.io.contracts import read_contract_csv


def load_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a predictions.csv with ids as strings (``"007"`` must not become ``7``)."""
    return read_contract_csv(path)


def canonical(predictions: pd.DataFrame) -> pd.DataFrame:
    """Checked copy: required columns, ids as strings, numeric labels, one row per sample and task."""
    missing = [c for c in COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    df = predictions.loc[:, list(COLUMNS)].copy()
    for c in ID_COLUMNS:
        df[c] = df[c].astype(str)
    df["y_true"] = pd.to_numeric(df["y_true"], errors="raise").astype(float)
    df["y_prob"] = pd.to_numeric(df["y_prob"], errors="raise").astype(float)
    bad = df["y_true"].notna() & ~df["y_true"].isin([0.0, 1.0])
    if bad.any():
        raise ValueError(f"y_true must be 0, 1 or empty; found {sorted(df.loc[bad, 'y_true'].unique())[:5]}")
    dup = df.duplicated(["sample_id", "task"])
    if dup.any():
        raise ValueError(
            f"{int(dup.sum())} duplicate (sample_id, task) rows, e.g. {df.loc[dup, 'sample_id'].iloc[0]!r}"
        )
    return df.sort_values(["task", "split", "sample_id"], kind="stable").reset_index(drop=True)


def jsonable(obj: Any) -> Any:
    """Nested dicts/lists with NumPy values → plain Python; NaN and ±inf → None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj
