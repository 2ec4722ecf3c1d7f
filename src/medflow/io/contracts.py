"""The contract files between stages (docs/contracts.md), read and written in one place.

Ids are kept exactly as written: ``007`` is not 7, and a sample or centre called ``NA`` is not a
missing value (pandas' default NA words apply to the numeric columns only). Writers are atomic, so a
killed job never leaves a half file that looks current. The other contracts have their own module:
problems.csv in :mod:`medflow.problems`, the checked manifest in :mod:`medflow.cohort.manifest`,
features in :mod:`medflow.io.features`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from medflow.io.atomic import atomic_path

#: Columns holding ids or names, read as strings without NA words.
ID_COLUMNS = ("sample_id", "patient_id", "center", "split", "task", "reason", "input")
_NA_WORDS = ["", "nan", "NaN", "NA", "N/A", "n/a", "null", "NULL", "None", "<NA>"]
#: The columns of every predictions.csv, in this order (long format: one row per sample and task).
PREDICTION_COLUMNS = ("sample_id", "patient_id", "split", "center", "task", "y_true", "y_prob")
#: The id columns of predictions.csv.
PREDICTION_ID_COLUMNS = PREDICTION_COLUMNS[:5]
#: The columns of splits.csv.
SPLIT_COLUMNS = ("sample_id", "patient_id", "center", "split", "fold")
#: The order in which reports and evaluations list splits: the held-out ones first.
SPLIT_ORDER = ("test", "external", "val", "train")


def read_contract_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A contract CSV with its id columns as strings (an empty id is ``""``) and numbers parsed."""
    header = pd.read_csv(path, nrows=0).columns
    ids = [c for c in header if c in ID_COLUMNS]
    return pd.read_csv(
        path,
        dtype={c: str for c in ids},
        keep_default_na=False,
        na_values={c: _NA_WORDS for c in header if c not in ids},
    )


def read_manifest_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A checked manifest (results/{study}/manifest.csv) as strings: every cell as written, empty → NaN."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def write_contract_csv(frame: pd.DataFrame, path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> None:
    """Write ``frame`` atomically; with ``columns``, exactly those columns in that order (missing → error)."""
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{os.fspath(path)}: the frame lacks contract column(s) {', '.join(missing)}")
        frame = frame[list(columns)]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_predictions(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """A predictions.csv: :data:`PREDICTION_COLUMNS`, in that order."""
    write_contract_csv(frame, path, PREDICTION_COLUMNS)


def ordered_splits(present: Sequence[str]) -> list[str]:
    """``present`` in :data:`SPLIT_ORDER`, any other split name after them, sorted."""
    known = [s for s in SPLIT_ORDER if s in present]
    return known + sorted(s for s in set(present) if s not in SPLIT_ORDER)
