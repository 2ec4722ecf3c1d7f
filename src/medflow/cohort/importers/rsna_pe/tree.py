"""The DICOM tree ``train/<Study>/<Series>/<SOP>.dcm``: listing it and what differs from ``train.csv``.

File existence is checked with one ``os.scandir`` per study and per series folder, optionally on
several threads; no file is opened.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cohort.importers.rsna_pe.layout import SERIES, STUDY
from medflow.logs import progress_bar
from medflow.problems import Problem


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


def scan_tree(train_dir: Path, jobs: list[tuple[str, list[str]]], workers: int) -> list[StudyScan]:
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


def disk_files(scans: list[StudyScan], pair_of: dict[tuple[str, str], int]) -> tuple[np.ndarray, list[str]]:
    """(series-folder code, SOP UID from the file name) of every ``.dcm`` found in a listed series folder."""
    codes: list[np.ndarray] = []
    sops: list[str] = []
    for scan in scans:
        for series, names in scan.files.items():
            if names:
                codes.append(np.full(len(names), pair_of[(scan.study, series)], dtype=np.int64))
                sops.extend(names)
    return (np.concatenate(codes) if codes else np.empty(0, dtype=np.int64)), sops


def tree_problems(
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


def file_problems(
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
