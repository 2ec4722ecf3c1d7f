"""Import the brain-metastasis seed's metadata CSV (one row per lesion) and its held-out test ids.

``path`` is the CSV (e.g. ``mask_vol_all.csv``) with the columns ``PiCare MetID`` (lesion id),
``image_path`` (a ``.npy`` MR volume), ``mask_path`` (its lesion mask, same shape) and
``Failure-binary`` (local failure 0/1); image and mask paths are absolute or relative to the CSV's
folder. ``test_ids`` (``test_id.npy`` next to the CSV) holds the lesion ids held out as the test split.

Manifest columns follow the brainmets study: ``mri`` (volume), ``lesion_mask`` (its mask) and
``local_failure``. Test lesions get ``split`` = test; every other lesion is fixed to ``train``, so the
study's grouped folds are dealt over exactly those (an empty split cell would instead let the study's
``fractions`` send some of them to val/test too).

Axis order: the seed's volumes are ordered (z, x, y). medflow reads a ``.npy`` volume as D×H×W
(slices, rows, columns; ``medflow.io.images.read_volume``), so the files are used as they are: z is
the slice axis D, x the rows H and y the columns W. Nothing is transposed; the importer reads only each
file's header and checks that the image is 3-D and that the mask has the image's shape.

Grouping: ``patient_from`` names a CSV column holding the patient, or a regular expression with one
group that cuts the patient out of the lesion id (``^(BM\\d+)_``). Without it each lesion is its own
group (``grouping: none`` in cohort.json, with a warning): lesions of one patient may then land in
different folds, which makes the estimates optimistic.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cohort.importers._common import (
    ImporterError,
    relative_to,
    shown,
    write_csv_atomic,
    write_json_atomic,
)
from medflow.cohort.importers._registry import register_importer
from medflow.cohort.importers.clnm_folders import normalise_id
from medflow.cohort.manifest import parse_binary
from medflow.io.hashing import sha256_file
from medflow.problems import Problem, write_problems

log = logging.getLogger(__name__)

SOURCE = "brainmets-meta"
ID, IMAGE, MASK, FAILURE = "PiCare MetID", "image_path", "mask_path", "Failure-binary"
MODALITY, MASK_COLUMN, LABEL = "mri", "lesion_mask", "local_failure"
CENTER = "brainmets"
MANIFEST_COLUMNS = ("sample_id", "patient_id", "center", LABEL, MODALITY, MASK_COLUMN, "split")
AXIS_ORDER = "the seed's (z, x, y) is read as medflow's D×H×W: z = slices, x = rows, y = columns; not transposed"
NO_PATIENT_WARNING = (
    "no patient_from given: each lesion is its own group, so lesions of one patient may fall into "
    "different folds or splits (optimistic estimates); set cohort.patient_from"
)


def volume_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of an .npy array (memory-mapped: only the header is read); None for other formats
    (NIfTI, DICOM, …), whose readers check them at ingest. Raises OSError or ValueError."""
    if path.suffix.lower() != ".npy":
        if not path.exists():
            raise FileNotFoundError(path)
        return None
    return tuple(int(s) for s in np.load(path, mmap_mode="r", allow_pickle=False).shape)


def read_test_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise ImporterError(f"test ids file not found: {path} (cohort.test_ids, relative to the CSV's folder)")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ImporterError(
            f"{path}: cannot be read without unpickling ({exc}); save the ids as numbers or strings "
            "(np.save(path, np.asarray(ids, dtype=str)))"
        ) from exc
    return [normalise_id(v) for v in np.asarray(arr).ravel().tolist()]


def _patients(table: pd.DataFrame, patient_from: str, problems: list[Problem], csv_name: str) -> pd.Series:
    if not patient_from:
        return table["_id"]
    if patient_from in table.columns:
        return table[patient_from].map(normalise_id).where(lambda s: s != "", table["_id"])
    try:
        pattern = re.compile(patient_from)
    except re.error as exc:
        raise ImporterError(f"cohort.patient_from {patient_from!r} is neither a CSV column nor a regex ({exc})") from exc
    if pattern.groups != 1:
        raise ImporterError(f"cohort.patient_from {patient_from!r}: a regex needs exactly one group, it has {pattern.groups}")
    out = []
    for lesion in table["_id"]:
        match = pattern.search(lesion)
        if match is None or not match.group(1):
            problems.append(Problem(csv_name, lesion, f"lesion id does not match patient_from {patient_from!r}; "
                                    "the lesion is its own patient"))
            out.append(lesion)
        else:
            out.append(match.group(1))
    return pd.Series(out, index=table.index)


@register_importer(
    SOURCE,
    description="the brain-metastasis seed's metadata CSV (PiCare MetID, image_path, mask_path, Failure-binary) + test_id.npy",
    reads="the metadata CSV",
    options={
        "test_ids": ".npy of lesion ids held out as the test split, relative to the CSV's folder ('' = none)",
        "patient_from": "CSV column or regex with one group (applied to the lesion id) giving the patient; '' = one group per lesion",
    },
)
def import_brainmets_meta(csv_path: Path, out_dir: Path, *, test_ids: str = "test_id.npy", patient_from: str = "") -> Path:
    """Write manifest.csv, import_problems.csv and cohort.json for the metadata CSV ``csv_path``."""
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    if not csv_path.is_file():
        raise ImporterError(f"metadata CSV not found: {csv_path}")
    base = csv_path.parent
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ImporterError(f"{csv_path}: cannot be read as CSV ({exc})") from exc
    table.columns = [str(c).strip().lstrip("\ufeff") for c in table.columns]
    absent = [c for c in (ID, IMAGE, MASK, FAILURE) if c not in table.columns]
    if absent:
        raise ImporterError(f"{csv_path}: column(s) {', '.join(map(repr, absent))} not found (columns: {', '.join(table.columns)})")
    name = csv_path.name
    problems: list[Problem] = []
    table["_id"] = table[ID].map(normalise_id)
    table["_line"] = range(2, len(table) + 2)
    n_rows = len(table)
    for line in table.loc[table["_id"] == "", "_line"]:
        problems.append(Problem(name, "", f"line {line}: empty {ID}; left out"))
    table = table[table["_id"] != ""]
    dup = table["_id"].duplicated()
    for lesion, line in zip(table.loc[dup, "_id"], table.loc[dup, "_line"], strict=True):
        problems.append(Problem(name, lesion, f"line {line}: lesion {lesion!r} listed again; the first row is used"))
    table = table[~dup].copy()

    labels, bad = parse_binary(table[FAILURE])
    keep = ~(bad | labels.isna()).to_numpy()
    for lesion, line, value in zip(table["_id"][~keep], table["_line"][~keep], table[FAILURE][~keep], strict=True):
        problems.append(Problem(name, lesion, f"line {line}: {FAILURE} = {value!r} is not 0 or 1; left out"))
    table[LABEL] = labels
    image_cells, mask_cells = [], []
    for i, (lesion, line, image, mask) in enumerate(zip(table["_id"], table["_line"], table[IMAGE], table[MASK], strict=True)):
        paths = {"image": base / image.strip(), "mask": base / mask.strip()}
        shapes = {}
        for what, path in paths.items():
            cell = (image if what == "image" else mask).strip()
            try:
                shapes[what] = volume_shape(path) if cell else ()
            except FileNotFoundError:
                problems.append(Problem(cell, lesion, f"line {line}: {what} file not found; left out"))
            except (OSError, ValueError) as exc:
                problems.append(Problem(cell, lesion, f"line {line}: {what} is not a readable .npy array ({exc}); left out"))
            if cell == "":
                problems.append(Problem(name, lesion, f"line {line}: {what} path is empty; left out"))
        ok = len(shapes) == 2 and () not in shapes.values()
        if not ok or None in shapes.values():
            pass  # a problem is listed already, or a format whose reader checks it at ingest
        elif len(shapes["image"]) != 3:
            problems.append(Problem(image.strip(), lesion, f"line {line}: image shape {shapes['image']} is not (z, x, y); left out"))
            ok = False
        elif shapes["mask"] != shapes["image"]:
            problems.append(Problem(mask.strip(), lesion, f"line {line}: mask shape {shapes['mask']} differs from the "
                                    f"image's {shapes['image']}; left out"))
            ok = False
        keep[i] &= ok
        image_cells.append(relative_to(paths["image"], out_dir))
        mask_cells.append(relative_to(paths["mask"], out_dir))
    table[MODALITY], table[MASK_COLUMN] = image_cells, mask_cells
    table["patient_id"] = _patients(table, patient_from, problems, name)

    held_out = read_test_ids(base / test_ids) if test_ids else []
    unknown_test = sorted(set(held_out) - set(table["_id"]))
    for lesion in unknown_test:
        problems.append(Problem(test_ids, lesion, f"test id {lesion!r} is not a lesion of the metadata CSV"))
    table = table[keep]
    is_test = table["_id"].isin(held_out)
    test_patients = set(table.loc[is_test, "patient_id"])
    pulled = table["patient_id"].isin(test_patients) & ~is_test
    for lesion, patient in zip(table.loc[pulled, "_id"], table.loc[pulled, "patient_id"], strict=True):
        problems.append(Problem(name, lesion, f"lesion {lesion!r} is not a test id but its patient {patient!r} has one; "
                                "moved to the test split (one patient, one split)"))
    table["split"] = np.where(is_test | pulled, "test", "train")
    if table.empty:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_problems(out_dir, base, problems)
        raise ImporterError(f"{csv_path}: no usable lesion; see {out_dir / 'import_problems.csv'}")
    manifest = pd.DataFrame({
        "sample_id": table["_id"], "patient_id": table["patient_id"], "center": CENTER,
        LABEL: table[LABEL].astype(np.int64), MODALITY: table[MODALITY], MASK_COLUMN: table[MASK_COLUMN],
        "split": table["split"],
    }, columns=list(MANIFEST_COLUMNS))

    out_dir.mkdir(parents=True, exist_ok=True)
    n_problems = _write_problems(out_dir, base, problems)
    warnings = [] if patient_from else [NO_PATIENT_WARNING]
    left_out = n_rows - len(manifest)
    if left_out:
        warnings.append(f"{left_out} of {n_rows} CSV rows left out (see import_problems.csv)")
    if unknown_test:
        warnings.append(f"{len(unknown_test)} test id(s) not in the metadata CSV: {shown(unknown_test)}")
    if pulled.any():
        warnings.append(f"{int(pulled.sum())} lesion(s) moved to the test split with their patient's test lesions")
    info = {
        "source": SOURCE,
        "grouping": "patient" if patient_from else "none",
        "group_unit": "patient" if patient_from else "lesion",
        "patient_from": patient_from or None,
        "warnings": warnings,
        "axis_order": AXIS_ORDER,
        "n_csv_rows": n_rows,
        "n_lesions": len(manifest),
        "n_patients": int(manifest["patient_id"].nunique()),
        "n_test_ids": len(set(held_out)),
        "n_test_ids_unknown": len(unknown_test),
        "n_moved_to_test": int(pulled.sum()),
        "split_counts": {k: int(v) for k, v in manifest["split"].value_counts().sort_index().items()},
        "label_counts": {"0": int((manifest[LABEL] == 0).sum()), "1": int((manifest[LABEL] == 1).sum())},
        "n_problems": n_problems,
        "labels": [LABEL],
        "source_file": str(csv_path.resolve()),
        "source_sha256": sha256_file(csv_path),
    }
    write_json_atomic(info, out_dir / "cohort.json")
    manifest_path = write_csv_atomic(manifest, out_dir / "manifest.csv")  # last: its presence means done
    log.info("imported %d of %d lesions (%d problems) from %s into %s", len(manifest), n_rows, n_problems, csv_path, manifest_path)
    return manifest_path


def _write_problems(out_dir: Path, base: Path, problems: list[Problem]) -> int:
    """import_problems.csv; files as the CSV names them (relative to its folder), never machine paths."""
    named = [Problem(relative_to(base / p.file, base) if p.file else "", p.sample_id, p.reason) for p in problems]
    return write_problems(out_dir / "import_problems.csv", sorted(named, key=lambda p: (p.sample_id, p.file, p.reason)))
