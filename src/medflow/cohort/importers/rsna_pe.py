"""Import the RSNA-STR Pulmonary Embolism layout: ``train.csv`` + ``train/<Study>/<Series>/<SOP>.dcm``.

``train.csv`` has one row per CT slice (17 columns: three UIDs, ``pe_present_on_image`` and 13
exam-level labels repeated on every row of a study). The importer writes, into ``out_dir``:

- ``manifest.csv``: one row per study (``sample_id`` = ``patient_id`` = StudyInstanceUID: RSNA
  publishes no patient key), ``center`` ``rsna``, the labels ``pe`` (= 1 − negative_exam_for_pe) and
  the nine scored exam labels, and ``ct_series`` = the series folder relative to ``out_dir``;
- ``slice_labels.csv``: ``sample_id, sop_instance_uid, pe_present_on_image`` for every CSV row;
- ``import_problems.csv``: what did not fit (inconsistent exam labels, several series, missing or
  unlisted ``.dcm`` files), each with what was done about it;
- ``cohort.json``.

No pixel data is read and nothing depends on the CSV row order: ingest sorts each series by
ImagePositionPatient and attaches slice labels by SOP Instance UID. The CSV work is vectorised;
file existence is checked with one ``os.scandir`` per study and per series folder, optionally on
several threads.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
from medflow.io.hashing import sha256_file
from medflow.logs import progress_bar
from medflow.problems import Problem, write_problems

log = logging.getLogger(__name__)

SOURCE = "rsna-pe"
CENTER = "rsna"
MODALITY = "ct_series"
STUDY, SERIES, SOP = "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"
ID_COLUMNS = (STUDY, SERIES, SOP)
SLICE_LABEL = "pe_present_on_image"
EXAM_COLUMNS = (
    "negative_exam_for_pe", "qa_motion", "qa_contrast", "flow_artifact", "rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1",
    "leftsided_pe", "chronic_pe", "true_filling_defect_not_pe", "rightsided_pe", "acute_and_chronic_pe",
    "central_pe", "indeterminate",
)  # fmt: skip
REQUIRED_COLUMNS = (*ID_COLUMNS, SLICE_LABEL, *EXAM_COLUMNS)  # the 17 public columns
# The nine exam labels scored by the competition, in its order.
SCORED_LABELS = (
    "negative_exam_for_pe", "rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1", "leftsided_pe", "chronic_pe",
    "rightsided_pe", "acute_and_chronic_pe", "central_pe", "indeterminate",
)  # fmt: skip
LABELS = ("pe", *SCORED_LABELS)
MANIFEST_COLUMNS = ("sample_id", "patient_id", "center", *LABELS, MODALITY)
SLICE_LABEL_COLUMNS = ("sample_id", "sop_instance_uid", SLICE_LABEL)
NO_PATIENT_KEY_WARNING = (
    "RSNA-STR PE publishes no patient key: patient_id is the StudyInstanceUID, so splits are grouped by "
    "study and two studies of one patient may fall into different splits."
)


# --- train.csv -----------------------------------------------------------------------------------


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


def _dedupe_sops(table: pd.DataFrame, csv_path: Path, problems: list[Problem]) -> pd.DataFrame:
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


def _exam_labels(
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
    contradicts = negative & (on_image["max"] == 1)
    for code in np.flatnonzero(contradicts.to_numpy()):
        problems.append(
            Problem(
                str(csv_path),
                str(studies[code]),
                f"negative_exam_for_pe = 1 but {int(on_image['sum'].iat[code])} slice(s) have "
                f"{SLICE_LABEL} = 1; labels kept as given",
            )
        )
    positive = ~negative & (resolved["indeterminate"] == 0) & (on_image["max"] == 0)
    for code in np.flatnonzero(positive.to_numpy()):
        problems.append(
            Problem(
                str(csv_path),
                str(studies[code]),
                f"the exam is PE positive (negative_exam_for_pe = 0, indeterminate = 0) but no slice has "
                f"{SLICE_LABEL} = 1; labels kept as given",
            )
        )
    return resolved


# --- the DICOM tree ------------------------------------------------------------------------------


@dataclass
class StudyScan:
    """What one study folder holds: ``.dcm`` stems per listed series (None = folder missing)."""

    study: str
    exists: bool
    files: dict[str, list[str] | None] = field(default_factory=dict)
    extra_series: list[str] = field(default_factory=list)


def _list_dcm(folder: str) -> list[str] | None:
    try:
        with os.scandir(folder) as it:
            return [e.name[:-4] for e in it if e.name.lower().endswith(".dcm") and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return None


def _scan_study(train_dir: str, study: str, series: list[str]) -> StudyScan:
    """One listing of the study folder, one of each listed series folder."""
    study_dir = os.path.join(train_dir, study)
    try:
        with os.scandir(study_dir) as it:
            dirs = {e.name for e in it if e.is_dir()}
    except (FileNotFoundError, NotADirectoryError):
        return StudyScan(study, exists=False)
    files = {s: (_list_dcm(os.path.join(study_dir, s)) if s in dirs else None) for s in series}
    return StudyScan(study, True, files, sorted(dirs - set(series)))


def _scan(train_dir: Path, jobs: list[tuple[str, list[str]]], workers: int) -> list[StudyScan]:
    """Scan every study (in ``jobs`` order) on ``workers`` threads, with a progress bar over studies."""
    bar = progress_bar(total=len(jobs), desc="rsna-pe scan", unit="study")
    out = []
    with bar:
        if workers <= 1:
            for study, series in jobs:
                out.append(_scan_study(str(train_dir), study, series))
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(lambda job: _scan_study(str(train_dir), *job), jobs):
                    out.append(result)
                    bar.update()
    return out


def _disk_files(scans: list[StudyScan], pair_of: dict[tuple[str, str], int]) -> tuple[np.ndarray, list[str]]:
    """(series-folder code, SOP UID from the file name) of every ``.dcm`` found in a listed series folder."""
    codes: list[np.ndarray] = []
    sops: list[str] = []
    for scan in scans:
        for series, names in scan.files.items():
            if names:
                codes.append(np.full(len(names), pair_of[(scan.study, series)], dtype=np.int64))
                sops.extend(names)
    return (np.concatenate(codes) if codes else np.empty(0, dtype=np.int64)), sops


# --- the importer --------------------------------------------------------------------------------


def import_rsna_pe(root: Path, out_dir: Path, *, workers: int = 1) -> Path:
    """Write manifest.csv, slice_labels.csv, import_problems.csv and cohort.json for the layout at ``root``.

    ``root`` is the folder holding ``train.csv`` and ``train/`` (or ``train.csv`` itself). Returns the
    manifest path. ``workers`` threads list the series folders. Raises ImporterError (nothing but
    import_problems.csv written) when train.csv is unusable or no study has a slice on disk.
    """
    root, out_dir = Path(root), Path(out_dir)
    if root.is_file() and root.name.lower().endswith(".csv"):
        csv_path, root = root, root.parent
    else:
        csv_path = root / "train.csv"
    train_dir = root / "train"
    table = read_train_csv(csv_path)
    if not train_dir.is_dir():
        raise ImporterError(
            f"{root}: folder 'train' not found; expected the DICOM files as train/<StudyInstanceUID>/"
            "<SeriesInstanceUID>/<SOPInstanceUID>.dcm next to train.csv"
        )
    n_rows_csv = len(table)
    problems: list[Problem] = []
    table = _dedupe_sops(table, csv_path, problems)
    codes, studies = pd.factorize(table[STUDY], sort=True)
    studies = pd.Index(studies)
    table = table.assign(study_code=codes)
    exam = _exam_labels(table, studies, csv_path, problems)

    # --- one listing per study and series folder, compared with the CSV by keys (never by order) ---
    grouped = table.groupby(["study_code", SERIES], sort=True)
    pair = grouped.ngroup().to_numpy()  # the (study, series) folder of every row
    per_series = grouped.size().rename("n_rows").reset_index()  # row k describes folder code k
    per_series.insert(0, STUDY, studies[per_series["study_code"].to_numpy()].astype("str"))
    pair_of = {
        (st, se): k for k, (st, se) in enumerate(zip(per_series[STUDY], per_series[SERIES], strict=True))
    }
    jobs = [(str(studies[code]), group[SERIES].tolist()) for code, group in per_series.groupby("study_code")]
    scans = _scan(train_dir, jobs, workers)
    disk_pair, disk_sop = _disk_files(scans, pair_of)
    folder_exists = np.zeros(len(per_series), dtype=bool)
    for scan in scans:
        for series, names in scan.files.items():
            folder_exists[pair_of[(scan.study, series)]] = names is not None
    row_of = pd.Index(table[SOP]).get_indexer(pd.Index(disk_sop, dtype="str"))  # SOP UIDs are unique here
    matched = row_of >= 0
    matched[matched] = pair[row_of[matched]] == disk_pair[matched]  # the file lies in its row's folder
    on_disk = np.zeros(len(table), dtype=bool)
    on_disk[row_of[matched]] = True
    per_series["n_present"] = np.bincount(disk_pair[matched], minlength=len(per_series))
    # the series the manifest uses: most slices on disk, then most CSV rows, then the smallest UID
    chosen = (
        per_series.sort_values(
            ["study_code", "n_present", "n_rows", SERIES], ascending=[True, False, False, True]
        )
        .drop_duplicates("study_code")
        .set_index("study_code")
    )
    usable = chosen["n_present"] > 0
    chosen_series = dict(zip(chosen[STUDY], chosen[SERIES], strict=True))
    usable_studies = set(chosen.loc[usable, STUDY])

    rel_train = relative_to(train_dir, out_dir)
    problems += _tree_problems(train_dir, scans, per_series, chosen_series, usable_studies, studies)
    missing = table.loc[~on_disk & folder_exists[pair], [STUDY, SERIES, SOP, "line"]]
    extra_pair = disk_pair[~matched]
    extra = pd.DataFrame(
        {
            STUDY: per_series[STUDY].to_numpy()[extra_pair],
            SERIES: per_series[SERIES].to_numpy()[extra_pair],
            SOP: np.asarray(disk_sop, dtype=object)[~matched],
        }
    )
    problems += _file_problems(train_dir, missing, extra, chosen_series, usable_studies, per_series)

    # --- outputs ---
    out_dir.mkdir(parents=True, exist_ok=True)
    problems.sort(key=lambda p: (p.sample_id, p.file, p.reason))
    n_problems = write_problems(out_dir / "import_problems.csv", problems)
    if not usable.any():
        raise ImporterError(
            f"{root}: none of the {len(studies)} studies in train.csv has a listed .dcm file on disk under "
            f"{train_dir}; see {out_dir / 'import_problems.csv'}"
        )
    picked = chosen.loc[usable]
    labels = exam.loc[picked.index]
    study_ids = picked[STUDY].to_numpy()
    manifest = pd.DataFrame(
        {
            "sample_id": study_ids,
            "patient_id": study_ids,
            "center": CENTER,
            "pe": 1 - labels["negative_exam_for_pe"].to_numpy(np.int64),
            **{c: labels[c].to_numpy(np.int64) for c in SCORED_LABELS},
            MODALITY: (rel_train + "/" + picked[STUDY] + "/" + picked[SERIES]).to_numpy(),
        },
        columns=list(MANIFEST_COLUMNS),
    )
    slice_labels = (
        table[[STUDY, SOP, SLICE_LABEL, "study_code"]]
        .sort_values(["study_code", SOP])
        .drop(columns="study_code")
        .set_axis(list(SLICE_LABEL_COLUMNS), axis=1)
    )
    slice_labels[SLICE_LABEL] = slice_labels[SLICE_LABEL].astype(np.int64)

    warnings = [NO_PATIENT_KEY_WARNING]
    indeterminate = int(((labels["indeterminate"] == 1) & (labels["negative_exam_for_pe"] == 0)).sum())
    if indeterminate:
        warnings.append(
            f"{indeterminate} studies are indeterminate (negative_exam_for_pe = 0, indeterminate = 1): "
            "pe = 1 − negative_exam_for_pe counts them as PE positive"
        )
    left_out = len(studies) - len(manifest)
    if n_problems:
        warnings.append(
            f"{n_problems} import problem(s), {left_out} of {len(studies)} studies left out of the manifest: "
            "see import_problems.csv"
        )
    info = {
        "source": SOURCE,
        # RSNA has no patient key: each study is its own group (contracts.md: grouping patient|none)
        "grouping": "none",
        "group_unit": "study",
        "warnings": warnings,
        "n_studies": len(manifest),
        "n_studies_in_csv": len(studies),
        "n_slices": n_rows_csv,
        "n_series": len(per_series),
        "n_problems": n_problems,
        "labels": list(LABELS),
        "label_counts": {c: int(manifest[c].sum()) for c in LABELS},
        "n_slices_pe_present": int(table[SLICE_LABEL].sum()),
        "source_file": str(csv_path.resolve()),
        "source_sha256": sha256_file(csv_path),
    }
    write_csv_atomic(slice_labels, out_dir / "slice_labels.csv")
    write_json_atomic(info, out_dir / "cohort.json")
    manifest_path = write_csv_atomic(manifest, out_dir / "manifest.csv")  # last: its presence means done
    log.info(
        "imported %d of %d studies (%d slices, %d problems) from %s into %s",
        len(manifest), len(studies), n_rows_csv, n_problems, root, manifest_path,
    )  # fmt: skip
    return manifest_path


def _tree_problems(
    train_dir: Path,
    scans: list[StudyScan],
    per_series: pd.DataFrame,
    chosen_series: dict[str, str],
    usable_studies: set[str],
    studies: pd.Index,
) -> list[Problem]:
    """Missing study/series folders, several series per study, folders on disk not in the CSV."""
    problems = []
    rows = per_series.set_index([STUDY, SERIES])["n_rows"]
    for scan in scans:
        study = scan.study
        fate = "" if study in usable_studies else "; the study is left out of the manifest"
        if not scan.exists:
            n = int(rows.loc[study].sum())
            problems.append(
                Problem(
                    str(train_dir / study),
                    study,
                    f"study folder missing ({n} slice(s) listed in train.csv){fate}",
                )
            )
            continue
        for series, names in scan.files.items():
            if names is None:
                problems.append(
                    Problem(
                        str(train_dir / study / series),
                        study,
                        f"series folder missing ({int(rows.loc[(study, series)])} slice(s) listed in train.csv){fate}",
                    )
                )
        if len(scan.files) > 1:
            counts = ", ".join(f"{s}: {int(rows.loc[(study, s)])} rows" for s in scan.files)
            use = (
                f"the manifest uses series {chosen_series[study]} (most slices on disk); the other series are "
                "not ingested (their slice labels stay in slice_labels.csv)"
                if study in usable_studies
                else "none has a listed slice on disk; the study is left out of the manifest"
            )
            problems.append(
                Problem(
                    str(train_dir / study), study, f"the study has {len(scan.files)} series ({counts}); {use}"
                )
            )
        for extra in scan.extra_series:
            problems.append(
                Problem(
                    str(train_dir / study / extra),
                    study,
                    "series folder on disk is not listed in train.csv; not imported",
                )
            )
    known = set(studies)
    with os.scandir(train_dir) as it:
        extra_studies = sorted(e.name for e in it if e.is_dir() and e.name not in known)
    for name in extra_studies:
        problems.append(
            Problem(
                str(train_dir / name), name, "study folder on disk is not listed in train.csv; not imported"
            )
        )
    return problems


def _file_problems(
    train_dir: Path,
    missing: pd.DataFrame,
    extra: pd.DataFrame,
    chosen_series: dict[str, str],
    usable_studies: set[str],
    per_series: pd.DataFrame,
) -> list[Problem]:
    """Listed ``.dcm`` files missing from an existing series folder, and ``.dcm`` files not listed."""
    problems = []
    n_present = per_series.set_index([STUDY, SERIES])["n_present"]
    for study, series, sop, line in missing.itertuples(index=False):
        if study not in usable_studies:
            fate = "the study is left out of the manifest (no listed slice on disk)"
        elif chosen_series[study] != series:
            fate = "its series is not used by the manifest"
        else:
            fate = (
                f"the study keeps its other {int(n_present.loc[(study, series)])} slice(s); "
                "ingest rejects the series if the gaps between slices become uneven"
            )
        problems.append(
            Problem(
                str(train_dir / study / series / f"{sop}.dcm"),
                study,
                f"listed in train.csv (row {int(line)}) but the file is missing; {fate}",
            )
        )
    for study, series, sop in extra.itertuples(index=False):
        fate = (
            "ingest reads it with the series (no slice label)"
            if study in usable_studies and chosen_series[study] == series
            else "its series is not used by the manifest"
        )
        problems.append(
            Problem(
                str(train_dir / study / series / f"{sop}.dcm"),
                study,
                f"on disk but not listed in train.csv; {fate}",
            )
        )
    return problems
