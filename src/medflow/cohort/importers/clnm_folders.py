"""Import the thyroid (CLNM) seed's folders: one folder per image modality, split folders, a labels CSV.

Layout (``path``)::

    tumour_us/{train,valid,itest,etest}/<patientID>.png     one folder per image modality, named as
    fat_ct/{train,valid,itest,etest}/<patientID>.png        in the study's ``modalities:``
    3y.csv                                                  labels (GB18030, id column 病历号, label group1)
    clinical.csv                                            optional clinical table, same id column

The split folders become a user-fixed split (``train`` → train, ``valid`` → val, ``itest`` → test,
``etest`` → external). The external test set comes from another hospital, so its patients get the
centre ``external`` and all others ``internal`` (a study may list ``external`` under
``split.external_centers``, or leave that list empty: the fixed ``external`` split holds either way).
Ids are matched as strings after one normalisation on every side (file names, labels, clinical):
surrounding blanks, a trailing ``.0`` written by spreadsheets and leading zeros are removed. A patient
with images in one modality but not another keeps its row with that modality's cell empty; every
mismatch is listed in ``import_problems.csv`` and counted in ``cohort.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medflow.cohort.importers._common import (
    ImporterError,
    relative_to,
    shown,
    write_csv_atomic,
    write_json_atomic,
)
from medflow.cohort.importers._registry import register_importer
from medflow.cohort.manifest import parse_binary
from medflow.io.hashing import sha256_file
from medflow.problems import Problem, write_problems

log = logging.getLogger(__name__)

SOURCE = "clnm-folders"
#: split folder → manifest split, in the order the seed lists them
SPLIT_FOLDERS = {"train": "train", "valid": "val", "itest": "test", "etest": "external"}
EXTERNAL_FOLDERS = frozenset({"etest"})
INTERNAL_CENTER, EXTERNAL_CENTER = "internal", "external"
IMAGE_SUFFIXES = (".png",)
CLINICAL_OUT = "clinical.csv"
_SPREADSHEET_FLOAT = re.compile(r"\.0+$")


def normalise_id(value: Any) -> str:
    """One spelling of an id for matching: stripped, no trailing ``.0`` (spreadsheets), no leading zeros."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()
    if re.fullmatch(r"\d+\.0+", text):
        text = _SPREADSHEET_FLOAT.sub("", text)
    stripped = text.lstrip("0")
    return stripped if stripped or not text else "0"


def parse_mapping(value: Mapping[str, str] | str, what: str) -> dict[str, str]:
    """``{lnm: group1}`` from the config, or ``lnm=group1,other=col`` from the command line."""
    if isinstance(value, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    out: dict[str, str] = {}
    for part in str(value).split(","):
        if not part.strip():
            continue
        key, sep, column = part.partition("=") if "=" in part else part.partition(":")
        if not sep or not key.strip() or not column.strip():
            raise ImporterError(f"{what}: {part.strip()!r} must read label=column (e.g. lnm=group1)")
        out[key.strip()] = column.strip()
    if not out:
        raise ImporterError(f"{what} is empty: give at least one label=column (e.g. lnm=group1)")
    return out


def parse_names(value: Iterable[str] | str) -> list[str]:
    """``[tumour_us, fat_ct]`` from the config, or ``tumour_us,fat_ct`` from the command line."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def read_id_csv(path: Path, encoding: str, id_column: str, what: str) -> pd.DataFrame:
    """A CSV keyed by ``id_column`` as strings; adds ``_id`` (normalised) and ``_line`` (header = line 1)."""
    if not path.is_file():
        raise ImporterError(f"{what} not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ImporterError(f"{path}: cannot be read with encoding {encoding!r} ({exc}); set cohort.encoding") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ImporterError(f"{path}: cannot be read as CSV ({exc})") from exc
    frame.columns = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
    if id_column not in frame.columns:
        raise ImporterError(
            f"{path}: id column {id_column!r} not found (columns: {', '.join(frame.columns)}); set cohort.id_column"
        )
    frame["_id"] = frame[id_column].map(normalise_id)
    frame["_line"] = range(2, len(frame) + 2)
    return frame


def scan_modality(root: Path, modality: str, problems: list[Problem]) -> dict[str, tuple[str, str]]:
    """{normalised id: (split folder, file relative to root)} for one modality folder."""
    found: dict[str, tuple[str, str]] = {}
    folder = root / modality
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and entry.name not in SPLIT_FOLDERS:
            problems.append(Problem(relative_to(entry, root), "", f"folder {entry.name!r} is not a split folder "
                                    f"({', '.join(SPLIT_FOLDERS)}); its images are not imported"))
    for split in SPLIT_FOLDERS:
        sub = folder / split
        if not sub.is_dir():
            continue
        for file in sorted(sub.iterdir()):
            rel = relative_to(file, root)
            if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(Problem(rel, "", "not a .png image; not imported"))
                continue
            pid = normalise_id(file.stem)
            if pid in found:
                problems.append(Problem(rel, pid, f"patient {pid!r} has a second {modality} image "
                                        f"(first: {found[pid][1]}); the first is used"))
                continue
            found[pid] = (split, rel)
    return found


def _modalities(root: Path, option: Iterable[str] | str) -> list[str]:
    names = parse_names(option)
    if names:
        missing = [m for m in names if not (root / m).is_dir()]
        if missing:
            raise ImporterError(f"{root}: modality folder(s) {', '.join(missing)} not found")
        return names
    names = [d.name for d in sorted(root.iterdir()) if d.is_dir() and any((d / s).is_dir() for s in SPLIT_FOLDERS)]
    if not names:
        raise ImporterError(
            f"{root}: no modality folder found (a folder holding {', '.join(SPLIT_FOLDERS)}/<patientID>.png)"
        )
    return names


@register_importer(
    SOURCE,
    description="the thyroid CLNM seed's folders: <modality>/{train,valid,itest,etest}/<patientID>.png + labels CSV",
    reads="the folder holding one folder per image modality and the labels CSV",
    tracked="{labels}",
    options={
        "labels": "labels CSV, relative to path",
        "encoding": "text encoding of the labels and clinical CSVs (the seed's: gb18030)",
        "id_column": "patient id column of the labels and clinical CSVs",
        "label_columns": "study label = CSV column, e.g. lnm=group1 (config: a mapping)",
        "clinical": "optional clinical CSV relative to path, keyed by id_column (written as clinical.csv)",
        "modalities": "image modality folders, comma-separated (default: every folder holding split folders)",
    },
)
def import_clnm_folders(
    root: Path,
    out_dir: Path,
    *,
    labels: str = "3y.csv",
    encoding: str = "gb18030",
    id_column: str = "病历号",
    label_columns: str = "lnm=group1",
    clinical: str = "",
    modalities: str = "",
) -> Path:
    """Write manifest.csv, import_problems.csv, cohort.json (and clinical.csv) for the folders at ``root``."""
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise ImporterError(f"{root}: not a folder (cohort.path is the folder holding the modality folders)")
    columns = parse_mapping(label_columns, "cohort.label_columns")
    mods = _modalities(root, modalities)
    problems: list[Problem] = []

    table = read_id_csv(root / labels, encoding, id_column, "labels CSV")
    absent = [c for c in columns.values() if c not in table.columns]
    if absent:
        raise ImporterError(f"{root / labels}: label column(s) {', '.join(absent)} not found "
                            f"(columns: {', '.join(c for c in table.columns if not c.startswith('_'))})")
    empty_id = table["_id"] == ""
    for line in table.loc[empty_id, "_line"]:
        problems.append(Problem(labels, "", f"line {line}: empty id"))
    table = table[~empty_id]
    dup = table["_id"].duplicated()
    for pid, line in zip(table.loc[dup, "_id"], table.loc[dup, "_line"], strict=True):
        problems.append(Problem(labels, pid, f"line {line}: id {pid!r} listed again; the first row is used"))
    table = table[~dup].set_index("_id")
    bad_label = pd.Series(False, index=table.index)
    for label, column in columns.items():
        parsed, bad = parse_binary(table[column])
        bad = bad | parsed.isna()
        for pid in table.index[bad.to_numpy()]:
            problems.append(Problem(labels, pid, f"line {table.at[pid, '_line']}: {column} = "
                                    f"{table.at[pid, column]!r} is not 0 or 1 (label {label}); patient left out"))
        bad_label |= bad.to_numpy()
        table[label] = parsed

    images = {m: scan_modality(root, m, problems) for m in mods}
    with_images = sorted(set().union(*images.values()), key=lambda s: (len(s), s))
    rows, conflicts, partial = [], 0, 0
    for pid in with_images:
        present = [m for m in mods if pid in images[m]]
        if pid not in table.index:
            problems.append(Problem(images[present[0]][pid][1], pid,
                                    f"patient {pid!r} has images but no row in the labels CSV; left out"))
            continue
        for m in mods:
            if m not in present:
                partial += 1
                problems.append(Problem("", pid, f"patient {pid!r} has no {m} image (present in "
                                        f"{', '.join(present)}); kept with {m} empty"))
        folders = {images[m][pid][0] for m in present}
        if len(folders) > 1:
            conflicts += 1
            problems.append(Problem(", ".join(images[m][pid][1] for m in present), pid,
                                    f"patient {pid!r} lies in different split folders ({', '.join(sorted(folders))}); "
                                    f"the {present[0]} folder is used"))
        if bad_label[pid]:
            continue
        folder = images[present[0]][pid][0]
        rows.append({
            "sample_id": pid,
            "patient_id": pid,
            "center": EXTERNAL_CENTER if folder in EXTERNAL_FOLDERS else INTERNAL_CENTER,
            **{label: int(table.at[pid, label]) for label in columns},
            **{m: relative_to(root / images[m][pid][1], out_dir) if pid in images[m] else "" for m in mods},
            "split": SPLIT_FOLDERS[folder],
        })
    unmatched_labels = sorted(set(table.index) - set(with_images))
    for pid in unmatched_labels:
        problems.append(Problem(labels, pid, f"line {table.at[pid, '_line']}: patient {pid!r} has no image in "
                                f"any modality folder ({', '.join(mods)})"))
    if not rows:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_problems(out_dir, problems)
        raise ImporterError(f"{root}: no patient has both an image and a label; see {out_dir / 'import_problems.csv'}")
    manifest = pd.DataFrame(rows, columns=["sample_id", "patient_id", "center", *columns, *mods, "split"])

    out_dir.mkdir(parents=True, exist_ok=True)
    clinical_info: dict[str, Any] | None = None
    if clinical:
        clinical_info = _write_clinical(root, clinical, encoding, id_column, out_dir, set(manifest["sample_id"]), problems)
    n_problems = _write_problems(out_dir, problems)

    no_label = [p for p in with_images if p not in table.index]
    warnings = []
    if partial:
        warnings.append(f"{partial} missing image(s): patients present in one modality folder and not another "
                        "are kept with that modality empty (see import_problems.csv)")
    if no_label:
        warnings.append(f"{len(no_label)} patient(s) with images but no labels row left out: {shown(no_label)}")
    if unmatched_labels:
        warnings.append(f"{len(unmatched_labels)} labels row(s) without any image: {shown(unmatched_labels)}")
    if conflicts:
        warnings.append(f"{conflicts} patient(s) in different split folders across modalities (see import_problems.csv)")
    info = {
        "source": SOURCE,
        "grouping": "patient",
        "warnings": warnings,
        "modalities": mods,
        "labels": list(columns),
        "label_columns": columns,
        "split_folders": SPLIT_FOLDERS,
        "centers": {INTERNAL_CENTER: "train, valid, itest", EXTERNAL_CENTER: "etest (another hospital)"},
        "id_normalisation": "strip, trailing .0, leading zeros; on file names, labels and clinical ids alike",
        "n_patients": len(manifest),
        "n_patients_with_images": len(with_images),
        "n_label_rows": len(table),
        "images_per_modality": {m: len(images[m]) for m in mods},
        "n_missing_images": partial,
        "n_without_labels": len(no_label),
        "n_labels_without_images": len(unmatched_labels),
        "n_bad_labels": int(bad_label.sum()),
        "n_split_conflicts": conflicts,
        "split_counts": {k: int(v) for k, v in manifest["split"].value_counts().sort_index().items()},
        "label_counts": {label: int(manifest[label].sum()) for label in columns},
        "n_problems": n_problems,
        "clinical": clinical_info,
        "source_file": str((root / labels).resolve()),
        "source_sha256": sha256_file(root / labels),
    }
    write_json_atomic(info, out_dir / "cohort.json")
    manifest_path = write_csv_atomic(manifest, out_dir / "manifest.csv")  # last: its presence means done
    log.info("imported %d patients (%d problems) from %s into %s", len(manifest), n_problems, root, manifest_path)
    return manifest_path


def _write_clinical(
    root: Path, name: str, encoding: str, id_column: str, out_dir: Path, known: set[str], problems: list[Problem]
) -> dict[str, Any]:
    """clinical.csv in ``out_dir``: the clinical CSV with its id column as ``sample_id`` (normalised)."""
    frame = read_id_csv(root / name, encoding, id_column, "clinical CSV")
    unknown = sorted(set(frame["_id"]) - known)
    for pid in unknown:
        problems.append(Problem(name, pid, f"clinical row for patient {pid!r}, who is not in the manifest"))
    missing = sorted(known - set(frame["_id"]))
    for pid in missing:
        problems.append(Problem(name, pid, f"patient {pid!r} has no clinical row"))
    out = frame.drop(columns=[id_column, "_line"]).rename(columns={"_id": "sample_id"})
    out = out[["sample_id", *[c for c in out.columns if c != "sample_id"]]]
    write_csv_atomic(out, out_dir / CLINICAL_OUT)
    return {"file": CLINICAL_OUT, "n_rows": len(out), "n_unknown_ids": len(unknown), "n_missing": len(missing)}


def _write_problems(out_dir: Path, problems: list[Problem]) -> int:
    """import_problems.csv; files are named relative to the cohort path (README, Privacy)."""
    return write_problems(out_dir / "import_problems.csv", sorted(problems, key=lambda p: (p.sample_id, p.file, p.reason)))
