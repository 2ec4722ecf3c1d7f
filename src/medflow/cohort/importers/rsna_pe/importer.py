"""The RSNA-PE importer: train.csv and the DICOM tree, compared by keys, into manifest and slice labels."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cohort.importers._common import ImporterError, relative_to, write_csv_atomic, write_json_atomic
from medflow.cohort.importers._registry import register_importer
from medflow.cohort.importers.rsna_pe.layout import (
    CENTER,
    LABELS,
    MANIFEST_COLUMNS,
    MODALITY,
    NO_PATIENT_KEY_WARNING,
    SCORED_LABELS,
    SERIES,
    SLICE_LABEL,
    SLICE_LABEL_COLUMNS,
    SOP,
    SOURCE,
    STUDY,
)
from medflow.cohort.importers.rsna_pe.train_csv import dedupe_sops, exam_labels, read_train_csv
from medflow.cohort.importers.rsna_pe.tree import disk_files, file_problems, scan_tree, tree_problems
from medflow.io.hashing import sha256_file
from medflow.problems import Problem, write_problems

log = logging.getLogger(__name__)


@register_importer(
    SOURCE,
    description="RSNA-STR Pulmonary Embolism CT (train.csv + train/<Study>/<Series>/<SOP>.dcm)",
    reads="the RSNA-PE folder holding train.csv and train/ (or train.csv itself)",
    tracked="train.csv",
    options={"workers": "threads for scanning folders"},
)
def import_rsna_pe(root: Path, out_dir: Path, *, workers: int = 4) -> Path:
    """Write manifest.csv, slice_labels.csv, import_problems.csv and cohort.json for the layout at ``root``.

    ``root`` is the folder holding ``train.csv`` and ``train/`` (or ``train.csv`` itself). Returns the
    manifest path. ``workers`` threads list the series folders (the outputs do not depend on it).
    Raises ImporterError (nothing but import_problems.csv written) when train.csv is unusable or no
    study has a slice on disk.
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
    table = dedupe_sops(table, csv_path, problems)
    codes, studies = pd.factorize(table[STUDY], sort=True)
    studies = pd.Index(studies)
    table = table.assign(study_code=codes)
    exam = exam_labels(table, studies, csv_path, problems)

    # --- one listing per study and series folder, compared with the CSV by keys (never by order) ---
    grouped = table.groupby(["study_code", SERIES], sort=True)
    pair = grouped.ngroup().to_numpy()  # the (study, series) folder of every row
    per_series = grouped.size().rename("n_rows").reset_index()  # row k describes folder code k
    per_series.insert(0, STUDY, studies[per_series["study_code"].to_numpy()].astype("str"))
    pair_of = {
        (st, se): k for k, (st, se) in enumerate(zip(per_series[STUDY], per_series[SERIES], strict=True))
    }
    jobs = [(str(studies[code]), group[SERIES].tolist()) for code, group in per_series.groupby("study_code")]
    scans = scan_tree(train_dir, jobs, workers)
    disk_pair, disk_sop = disk_files(scans, pair_of)
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
    problems += tree_problems(train_dir, scans, per_series, chosen_series, usable_studies, studies)
    missing = table.loc[~on_disk & folder_exists[pair], [STUDY, SERIES, SOP, "line"]]
    extra_pair = disk_pair[~matched]
    extra = pd.DataFrame(
        {
            STUDY: per_series[STUDY].to_numpy()[extra_pair],
            SERIES: per_series[SERIES].to_numpy()[extra_pair],
            SOP: np.asarray(disk_sop, dtype=object)[~matched],
        }
    )
    problems += file_problems(train_dir, missing, extra, chosen_series, usable_studies, per_series)

    # --- outputs ---
    out_dir.mkdir(parents=True, exist_ok=True)
    n_problems = _write_problems(out_dir, root, problems)
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


def _write_problems(out_dir: Path, root: Path, problems: list[Problem]) -> int:
    """import_problems.csv, each file named relative to the layout's root (``train/<study>/…``, as
    the RSNA-PE documentation names it), never by a path of this machine (README, Privacy)."""
    named = [replace(p, file=relative_to(p.file, root)) for p in problems]
    return write_problems(out_dir / "import_problems.csv", sorted(named, key=lambda p: (p.sample_id, p.file, p.reason)))
