"""One reader for the contract CSVs (docs/contracts.md): splits, predictions, slice predictions,
excluded samples. Ids are kept exactly as written: ``007`` is not 7, and a sample or centre called
``NA`` is not a missing value (pandas' default NA words apply to the numeric columns only)."""

from __future__ import annotations

import os

import pandas as pd

#: Columns holding ids or names, read as strings without NA words.
ID_COLUMNS = ("sample_id", "patient_id", "center", "split", "task", "reason", "input")
_NA_WORDS = ["", "nan", "NaN", "NA", "N/A", "n/a", "null", "NULL", "None", "<NA>"]


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
