"""Reading ``train.csv``: the checked table, duplicate SOP rows and one set of exam labels per study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cohort.importers._common import ImporterError, shown
from medflow.cohort.importers.rsna_pe.layout import (
    EXAM_COLUMNS,
    ID_COLUMNS,
    REQUIRED_COLUMNS,
    SCORED_LABELS,
    SLICE_LABEL,
    SOP,
    STUDY,
)
from medflow.problems import Problem


def read_train_csv(path: Path) -> pd.DataFrame:
    """Read and check ``train.csv``: the 17 columns, non-empty UIDs, 0/1 labels (as int8).

    Adds ``line`` (the CSV line number, header = line 1). Raises ImporterError naming every problem.
    """
    if not path.is_file():
        raise FileNotFoundError(f"RSNA-PE train.csv not found: {path}")
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ImporterError(f"{path}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ImporterError(
            f"{path}: column(s) missing: {', '.join(missing)}; columns found: {', '.join(header) or 'none'}"
        )
    try:
        table = pd.read_csv(
            path,
            usecols=list(REQUIRED_COLUMNS),
            dtype=dict.fromkeys(ID_COLUMNS, "str"),
            keep_default_na=False,
            na_values={c: [""] for c in REQUIRED_COLUMNS},
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ImporterError(f"{path}: cannot be read as CSV ({exc})") from exc
    if table.empty:
        raise ImporterError(f"{path}: has a header but no rows")
    table = table.assign(line=np.arange(2, len(table) + 2, dtype=np.int64))

    errors: list[str] = []
    for col in ID_COLUMNS:
        empty = table[col].isna() | (table[col].str.strip() == "")
        if empty.any():
            errors.append(f"column {col!r} is empty in {shown(table.loc[empty, 'line'].tolist(), 'row ')}")
    for col in (SLICE_LABEL, *EXAM_COLUMNS):
        values = table[col]
        numeric = values if pd.api.types.is_numeric_dtype(values) else pd.to_numeric(values, errors="coerce")
        bad = ~numeric.isin((0, 1))  # NaN and text are never 0 or 1
        if bad.any():
            examples = ", ".join(repr(v) for v in pd.unique(values[bad].astype("str"))[:3])
            errors.append(
                f"column {col!r} must hold 0 or 1, found {examples} in {shown(table.loc[bad, 'line'].tolist(), 'row ')}"
            )
        else:
            table[col] = numeric.astype(np.int8)
    if errors:
        raise ImporterError(f"{path}: {len(errors)} problem(s):\n  - " + "\n  - ".join(errors))
    return table


def dedupe_sops(table: pd.DataFrame, csv_path: Path, problems: list[Problem]) -> pd.DataFrame:
    """Keep the first row of every SOP Instance UID listed more than once (a problem row per UID)."""
    dup = table[SOP].duplicated(keep=False)
    if not dup.any():
        return table
    for sop, rows in table.loc[dup].groupby(SOP, sort=True):
        lines = rows["line"].tolist()
        problems.append(
            Problem(
                str(csv_path),
                str(rows[STUDY].iloc[0]),
                f"SOPInstanceUID {sop} is listed in {len(lines)} rows ({shown(lines, 'rows ')}); "
                f"kept row {lines[0]}, ignored the others",
            )
        )
    return table.loc[~table[SOP].duplicated(keep="first")]


def exam_labels(
    table: pd.DataFrame, studies: pd.Index, csv_path: Path, problems: list[Problem]
) -> pd.DataFrame:
    """One row of scored exam labels per study (index = study code), the majority where rows disagree."""
    codes = table["study_code"].to_numpy()
    values = table[list(SCORED_LABELS)]
    means = values.groupby(codes).mean()
    resolved = (means >= 0.5).astype(np.int8)  # ties → 1
    differs = (values.to_numpy() != resolved.to_numpy()[codes]).any(axis=1)
    if differs.any():
        mixed = (means > 0) & (means < 1)
        for code, rows in table.loc[differs].groupby("study_code", sort=True):
            labels = [c for c in SCORED_LABELS if mixed.at[code, c]]
            n_rows = int((codes == code).sum())
            problems.append(
                Problem(
                    str(csv_path),
                    str(studies[code]),
                    f"exam labels differ between the {n_rows} rows of the study ({', '.join(labels)}): "
                    f"{shown(rows['line'].tolist(), 'rows ')} disagree with the majority; "
                    "used the majority value per label (ties → 1)",
                )
            )
    # Exam labels against slice labels (the competition's consistency rules), kept as given.
    on_image = table.groupby(codes)[SLICE_LABEL].agg(["sum", "max"])
    negative = resolved["negative_exam_for_pe"] == 1
    checks = (
        (negative & (on_image["max"] == 1),
         lambda code: f"negative_exam_for_pe = 1 but {int(on_image['sum'].iat[code])} slice(s) have {SLICE_LABEL} = 1"),
        (~negative & (resolved["indeterminate"] == 0) & (on_image["max"] == 0),
         lambda code: "the exam is PE positive (negative_exam_for_pe = 0, indeterminate = 0) but no slice has "
                      f"{SLICE_LABEL} = 1"),
    )
    for inconsistent, reason in checks:
        problems += [Problem(str(csv_path), str(studies[code]), f"{reason(code)}; labels kept as given")
                     for code in np.flatnonzero(inconsistent.to_numpy())]
    return resolved
