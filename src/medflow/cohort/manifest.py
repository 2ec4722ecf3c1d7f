"""Load and validate a cohort manifest (docs/contracts.md): every problem names its row and column."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medflow.config import (
    IMAGE_KINDS,
    SPLIT_NAMES,
    container_columns,
    modalities_of_kind,
    path_columns,
    time_column,
    time_columns,
)
from medflow.io.contracts import read_manifest_table

log = logging.getLogger(__name__)

ID_COLUMNS = ("sample_id", "patient_id", "center")
CONTAINER_SEP = "#"
# How many offending rows a message lists before it says "and N more".
_MAX_ROWS_SHOWN = 5


class ManifestError(ValueError):
    """The manifest cannot be used; the message lists every problem with its row and column."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))


@dataclass
class Cohort:
    """A validated manifest, the folder its relative paths start from, and what cohort.json said."""

    manifest: pd.DataFrame
    root: Path
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def grouping(self) -> str:
        return self.info.get("grouping", "patient")

    def resolve(self, value: str, *, container: bool = False) -> Path:
        """The file a manifest path cell points at (container references lose their ``#row`` part)."""
        return resolve_path(self.root, value, container=container)


def resolve_path(root: Path, value: str, *, container: bool = False) -> Path:
    """``value`` relative to ``root``. Only a container reference (``patches``: ``file.hdf5#row``)
    loses what follows its last ``#``: elsewhere ``#`` is an ordinary character of a file name."""
    file_part = value.rpartition(CONTAINER_SEP)[0] if container and CONTAINER_SEP in value else value
    path = Path(file_part)
    return path if path.is_absolute() else root / path


#: A cell starting with one of these is a formula when a spreadsheet opens the CSV (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _rows(mask: pd.Series | np.ndarray, frame: pd.DataFrame) -> str:
    """Human row numbers (the CSV line: header is line 1) of the rows where ``mask`` holds."""
    lines = [int(i) + 2 for i in np.flatnonzero(np.asarray(mask))]
    shown = ", ".join(map(str, lines[:_MAX_ROWS_SHOWN]))
    more = f" and {len(lines) - _MAX_ROWS_SHOWN} more" if len(lines) > _MAX_ROWS_SHOWN else ""
    return f"row{'s' if len(lines) > 1 else ''} {shown}{more}"


def parse_binary(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse 0/1 labels written as 0, 1, 0.0, 1.0, true/false; return (float labels with NaN, bad mask)."""
    text = values.astype("string").str.strip().str.lower()
    mapping = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "false": 0.0, "true": 1.0}
    parsed = text.map(mapping).astype("float64")
    empty = text.isna() | (text == "") | text.isin(["nan", "na", "n/a"])
    bad = parsed.isna() & ~empty
    return parsed, bad


def load_manifest(
    path: str | Path,
    study: Mapping[str, Any],
    *,
    root: str | Path | None = None,
    missing_files: str = "error",
) -> Cohort:
    """Read ``path`` and check it against the study's config.

    ``missing_files="error"`` makes a path that does not exist a ManifestError; ``"warn"`` records it
    in ``Cohort.warnings`` and leaves it to ingest to list it in problems.csv (``on_bad_input: skip``).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, [f"manifest file not found: {path}"])
    root = Path(root) if root is not None else path.parent
    info: dict[str, Any] = {}
    info_path = path.parent / "cohort.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(path, [f"cannot be read as CSV: {exc}"]) from exc
    frame.columns = [str(c).strip() for c in frame.columns]

    problems: list[str] = []
    labels = list(study["labels"])
    optional = set(study.get("labels_optional", []))
    paths = path_columns(study)
    extra = list(study["cohort"].get("extra_columns", []))
    known = [*ID_COLUMNS, *labels, *paths, "split", *extra, *time_columns(study)]

    duplicated_cols = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated_cols:
        problems.append(f"duplicate column(s): {', '.join(duplicated_cols)}")
    missing_cols = [c for c in [*ID_COLUMNS, *labels, *paths] if c not in frame.columns]
    for col in missing_cols:
        what = "label" if col in labels else "modality path" if col in paths else "id"
        problems.append(f"column {col!r} ({what} column) is missing; columns found: {', '.join(frame.columns)}")
    for col in frame.columns:
        if col not in known:
            problems.append(
                f"column {col!r} is unknown: not an id, label or modality of this study "
                f"(known: {', '.join(known)}); list it under cohort.extra_columns to carry it along"
            )
    if problems:
        raise ManifestError(path, problems)
    if frame.empty:
        raise ManifestError(path, ["the manifest has no rows"])

    for col in ID_COLUMNS:
        frame[col] = frame[col].astype("string").str.strip()
        empty = frame[col].isna() | (frame[col] == "")
        if empty.any():
            problems.append(f"column {col!r} is empty in {_rows(empty, frame)}")
        formula = frame[col].str.startswith(FORMULA_STARTS).fillna(False)
        if formula.any():
            problems.append(
                f"column {col!r} starts with one of = + - @ in {_rows(formula, frame)}: a spreadsheet would run "
                f"it as a formula when a clinician opens an output CSV; rename these ids"
            )
    dup = frame["sample_id"].duplicated(keep=False) & (frame["sample_id"] != "")
    if dup.any():
        ids = sorted(frame.loc[dup, "sample_id"].unique())[:_MAX_ROWS_SHOWN]
        problems.append(f"column 'sample_id' has duplicates {', '.join(ids)} in {_rows(dup, frame)}")

    centres = frame.groupby("patient_id")["center"].nunique()
    for patient in centres[centres > 1].index:
        rows = frame["patient_id"] == patient
        seen = ", ".join(sorted(frame.loc[rows, "center"].unique()))
        problems.append(f"patient {patient!r} appears in several centres ({seen}) in {_rows(rows, frame)} (column 'center')")

    for label in labels:
        parsed, bad = parse_binary(frame[label])
        if bad.any():
            examples = ", ".join(repr(v) for v in frame.loc[bad, label].unique()[:3])
            problems.append(f"column {label!r}: labels must be 0 or 1, found {examples} in {_rows(bad, frame)}")
        empty = parsed.isna() & ~bad
        if empty.any() and label not in optional:
            problems.append(
                f"column {label!r} is empty in {_rows(empty, frame)}; list it under labels_optional if that is allowed"
            )
        frame[label] = parsed

    if "split" in frame.columns:
        split = frame["split"].astype("string").str.strip().str.lower()
        bad = ~(split.isin(SPLIT_NAMES) | (split == ""))
        if bad.any():
            problems.append(
                f"column 'split' must be one of {', '.join(SPLIT_NAMES)} or empty, "
                f"found {', '.join(map(repr, split[bad].unique()[:3]))} in {_rows(bad, frame)}"
            )
        frame["split"] = split.where(split != "", pd.NA)
        fixed = frame.dropna(subset=["split"]).groupby("patient_id")["split"].nunique()
        for patient in fixed[fixed > 1].index:
            rows = (frame["patient_id"] == patient) & frame["split"].notna()
            problems.append(f"patient {patient!r} has samples fixed to different splits in {_rows(rows, frame)} (column 'split')")

    warnings: list[str] = []
    containers = container_columns(study)
    for col in paths:
        cells = frame[col].astype("string").str.strip()
        frame[col] = cells.where(cells != "", pd.NA)
        present = frame[col].notna()
        exists = np.array(
            [resolve_path(root, v, container=col in containers).exists() if ok else True
             for v, ok in zip(frame[col], present, strict=True)]
        )
        missing = ~exists
        if missing.any():
            # rows, not cells: this message reaches cohort.json and the reports (README, Privacy)
            msg = f"column {col!r}: file not found in {_rows(missing, frame)} (paths are relative to the manifest's folder)"
            if missing_files == "error":
                problems.append(msg)
            else:
                warnings.append(msg)
                log.warning("%s: %s", path, msg)

    time_problems, time_warnings = _acquisition_times(frame, study)
    problems += time_problems
    for msg in time_warnings:
        warnings.append(msg)
        log.warning("%s: %s", path, msg)

    if problems:
        raise ManifestError(path, problems)
    if info.get("grouping") == "none":
        warnings.append(
            "patient ids are not known for this cohort: splits cannot be grouped by patient "
            "(samples from one patient may fall into different splits)"
        )
    return Cohort(manifest=frame.reset_index(drop=True), root=root, info=info, warnings=warnings)


def _acquisition_times(frame: pd.DataFrame, study: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The optional ``{modality}_hours`` columns of image modalities (hours since admission each image
    was acquired at; ingest leaves out images from outside the study's observation window): parsed to
    float in place (empty → NaN). Returns problems (cells that are not numbers) and warnings (an image
    modality of a study with a window whose time nobody can check)."""
    problems: list[str] = []
    warnings: list[str] = []
    window = study.get("window_hours")
    for mod in modalities_of_kind(study, IMAGE_KINDS):
        col = time_column(mod)
        if col not in frame.columns:
            if window is not None:
                warnings.append(
                    f"modality {mod!r} has no column {col!r} (hours since admission each image was acquired): "
                    f"medflow cannot verify that its images lie inside the study's observation window of "
                    f"{window:g} h; add the column so that images from outside the window are left out"
                )
            continue
        text = frame[col].astype("string").str.strip()
        empty = text.isna() | (text == "") | text.str.lower().isin(["nan", "na", "n/a"])
        hours = pd.to_numeric(text.mask(empty), errors="coerce").astype("float64")
        bad = ~empty & ~np.isfinite(hours.to_numpy(np.float64, na_value=np.nan))
        if bad.any():  # the values are not quoted: a date or time of day would identify the patient
            problems.append(
                f"column {col!r}: hours since admission must be numbers (or empty), not dates, times or text, "
                f"in {_rows(bad, frame)}"
            )
        frame[col] = hours
    return problems, warnings


def write_validated(
    cohort: Cohort, manifest_out: str | Path, info_out: str | Path, *, source: str | Path, labels: list[str]
) -> None:
    """Write the checked manifest and a cohort.json that records where its relative paths start."""
    from medflow.config import fingerprint
    from medflow.io.atomic import atomic_path

    with atomic_path(manifest_out) as tmp:
        cohort.manifest.to_csv(tmp, index=False)
    info = {
        **cohort.info,
        "root": str(cohort.root),
        "source_manifest": str(source),
        "manifest_hash": fingerprint(cohort.manifest.astype(str).to_dict(orient="list")),
        "labels": list(labels),
        "n_samples": len(cohort.manifest),
        "n_patients": int(cohort.manifest["patient_id"].nunique()),
        "warnings": sorted(set(cohort.info.get("warnings", [])) | set(cohort.warnings)),
    }
    with atomic_path(info_out) as tmp:
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")


def read_validated(manifest_path: str | Path, info_path: str | Path | None = None) -> Cohort:
    """Read a manifest written by :func:`write_validated` (no re-validation; types restored)."""
    manifest_path = Path(manifest_path)
    info_path = Path(info_path) if info_path is not None else manifest_path.parent / "cohort.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    frame = read_manifest_table(manifest_path)
    for label in info.get("labels", []):
        frame[label] = frame[label].astype("float64")
    return Cohort(manifest=frame, root=Path(info["root"]), info=info, warnings=list(info.get("warnings", [])))
