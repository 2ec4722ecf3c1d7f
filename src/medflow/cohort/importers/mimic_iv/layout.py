"""Where the MIMIC-IV, MIMIC-CXR-JPG and MIMIC-IV-Note tables lie, and the seed's item lists."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from medflow.cohort.importers._common import ImporterError

SOURCE = "mimic-iv"
CENTER = "mimic-iv"
LABELS = ("mortality", "longstay", "readmission")
MODALITIES = ("ehr", "cxr", "notes")
MANIFEST_COLUMNS = ("sample_id", "patient_id", "center", *LABELS, "cxr", "cxr_hours", "notes")
LONGSTAY_DAYS = 7
READMISSION_DAYS = 30

# The seed's selection (MultimodalPred, EHR_dataset), matched by label (case and outer spaces ignored).
CHART_ITEMS = (
    "Heart Rate",
    "Non Invasive Blood Pressure systolic",
    "Non Invasive Blood Pressure diastolic",
    "Non Invasive Blood Pressure mean",
    "Respiratory Rate",
    "O2 saturation pulseoxymetry",
    "GCS - Verbal Response",
    "GCS - Eye Opening",
    "GCS - Motor Response",
)
LAB_ITEMS = (  # blood only (d_labitems.fluid = Blood): the seed's 23-name list without its duplicate
    "Glucose", "Potassium", "Sodium", "Chloride", "Creatinine", "Urea Nitrogen", "Bicarbonate", "Anion Gap",
    "Hemoglobin", "Hematocrit", "Magnesium", "Platelet Count", "Phosphate", "White Blood Cells",
    "Calcium, Total", "MCH", "Red Blood Cells", "MCHC", "MCV", "RDW", "Neutrophils", "Vancomycin",
)  # fmt: skip
PROCEDURE_ITEMS = (
    "Foley Catheter",
    "PICC Line",
    "Intubation",
    "Peritoneal Dialysis",
    "Bronchoscopy",
    "EEG",
    "Dialysis - CRRT",
    "Dialysis Catheter",
    "Chest Tube Removed",
    "Hemodialysis",
)
LAB_FLUID = "blood"

CXR_METADATA = "mimic-cxr-2.0.0-metadata"
NOTES_TABLE = ("note", "radiology")


def names(value: str | Sequence[str] | None, default: Iterable[str] = ()) -> tuple[str, ...]:
    """A list option: a list (config) or one string separated by ``;`` (or ``,`` where no ``;``: CLI)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return tuple(default)
    if isinstance(value, str):
        sep = ";" if ";" in value else ","
        value = value.split(sep)
    out = tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
    return out or tuple(default)


def item_names(value: str | Sequence[str] | None, default: Iterable[str]) -> tuple[str, ...]:
    """Item labels: like ``names`` but split on ``;`` only (lab labels hold commas: ``Calcium, Total``)."""
    if isinstance(value, str) and value.strip():
        value = value.split(";")
    return names(value, default)


def find_table(root: Path, folders: Sequence[str], name: str, *, what: str) -> Path:
    """``root/<folder>/<name>.csv.gz`` or ``.csv``, first folder first; ImporterError naming what was looked for."""
    tried = []
    for folder in folders:
        for suffix in (".csv.gz", ".csv"):
            path = root / folder / f"{name}{suffix}" if folder else root / f"{name}{suffix}"
            if path.is_file():
                return path
            tried.append(str(Path(folder) / f"{name}{suffix}") if folder else f"{name}{suffix}")
    raise ImporterError(f"{root}: {what} not found; looked for {', '.join(tried)}")


def admissions_table(root: Path) -> Path:
    return find_table(root, ("hosp", "core"), "admissions", what="the admissions table (MIMIC-IV hosp/ or v1.0 core/)")


def patients_table(root: Path) -> Path:
    return find_table(root, ("hosp", "core"), "patients", what="the patients table (MIMIC-IV hosp/ or v1.0 core/)")


def icu_table(root: Path, name: str) -> Path:
    return find_table(root, ("icu",), name, what=f"the ICU table {name}")


def hosp_table(root: Path, name: str) -> Path:
    return find_table(root, ("hosp",), name, what=f"the hospital table {name}")


def header(path: Path) -> list[str]:
    """The column names of a CSV (gzipped or not), read from its first line only."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
            row = next(csv.reader(fh), [])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise ImporterError(f"{path}: cannot be read as CSV ({exc})") from exc
    return [c.strip() for c in row]


def require_columns(path: Path, needed: Iterable[str]) -> list[str]:
    columns = header(path)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ImporterError(
            f"{path}: column(s) {', '.join(missing)} missing; found {', '.join(columns) or 'none'}"
        )
    return columns


def race_column(path: Path) -> str:
    """``race`` (v2.x/3.x) or ``ethnicity`` (v1.0)."""
    columns = header(path)
    for name in ("race", "ethnicity"):
        if name in columns:
            return name
    raise ImporterError(f"{path}: neither 'race' (MIMIC-IV v2+) nor 'ethnicity' (v1.0) among {', '.join(columns)}")


def sql_text(value: str | Path) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(sql_text(v) for v in values) + ")"


@contextlib.contextmanager
def read_errors(path: Path) -> Iterator[None]:
    """A failed read of ``path`` as an ImporterError saying the first line of DuckDB's message only:
    the lines after it quote the offending row (patient data), which must not reach a log."""
    try:
        yield
    except ImporterError:
        raise
    except Exception as exc:  # duckdb.Error, but duckdb is imported lazily
        if not type(exc).__module__.startswith(("duckdb", "_duckdb")):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImporterError(f"{path}: cannot be read ({first[:300]})") from None
