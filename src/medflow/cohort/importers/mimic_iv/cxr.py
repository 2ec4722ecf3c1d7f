"""MIMIC-CXR-JPG: the images of the wanted views taken inside each admission's window, checked by decoding.

MIMIC-CXR has no ``hadm_id``: an image belongs to an admission of its subject when its StudyDate +
StudyTime lies in [admittime, admittime + window_hours]. The manifest's image modality holds one image
per sample: the **last** usable image inside the window (the seed weights the images of a view by
softmax of their hours, in practice the latest). All qualifying images, in time order, are listed in
``cxr_images.csv``; one that is missing or does not decode is a problem row and the admission goes on
with the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medflow.cohort.importers.mimic_iv.layout import (
    CXR_METADATA,
    find_table,
    require_columns,
    sql_list,
    sql_text,
)
from medflow.problems import Problem

if TYPE_CHECKING:
    import duckdb


def image_path(subject_id: int, study_id: int, dicom_id: str) -> str:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg`` (relative to the MIMIC-CXR-JPG root)."""
    s = str(subject_id)
    return f"files/p{s[:2]}/p{s}/s{study_id}/{dicom_id}.jpg"


def qualifying_images(con: duckdb.DuckDBPyConnection, cxr_root: Path, cohort: pd.DataFrame,
                      views: Sequence[str], window_hours: float) -> pd.DataFrame:
    """``hadm_id, subject_id, study_id, dicom_id, view, hours`` of every image of the views inside the
    window of a cohort admission, in time order per admission."""
    path = find_table(cxr_root, ("",), CXR_METADATA, what="the MIMIC-CXR-JPG metadata table")
    require_columns(path, ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"))
    con.register("cohort_cxr", cohort[["subject_id", "hadm_id", "admittime"]])
    # StudyTime HHMMSS.fff is written as a number: leading zeros may be gone (93014.5 = 09:30:14.5)
    taken = """(strptime(trim(CAST(m.StudyDate AS VARCHAR)), '%Y%m%d')
                + to_microseconds(CAST(round((floor(t / 10000) * 3600 + floor(t / 100) % 100 * 60 + t % 100) * 1e6)
                                       AS BIGINT)))"""
    hours = f"epoch({taken} - c.admittime) / 3600.0"
    query = f"""
        SELECT c.hadm_id, m.subject_id, m.study_id, m.dicom_id, m.view, {hours} AS hours
        FROM (SELECT CAST(subject_id AS BIGINT) AS subject_id, CAST(study_id AS BIGINT) AS study_id,
                     trim(dicom_id) AS dicom_id, upper(trim(ViewPosition)) AS view, StudyDate,
                     TRY_CAST(StudyTime AS DOUBLE) AS t
              FROM read_csv({sql_text(path)}, header = true, all_varchar = true)
              WHERE upper(trim(ViewPosition)) IN {sql_list(v.upper() for v in views)}) m
        JOIN cohort_cxr c ON m.subject_id = c.subject_id
        WHERE m.t IS NOT NULL AND {hours} BETWEEN 0 AND {float(window_hours)}
        ORDER BY c.hadm_id, hours, m.dicom_id
    """
    return con.execute(query).df()


def check_jpeg(path: Path) -> str | None:
    """None when the file decodes as an image; else the reason (no path in it)."""
    from PIL import Image

    if not path.is_file():
        return "image file not found"
    try:
        with Image.open(path) as img:
            img.draft("L", (max(1, img.width // 8), max(1, img.height // 8)))  # decode at 1/8: every byte still read
            img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return f"the JPEG does not decode ({type(exc).__name__})"
    return None


def choose_images(images: pd.DataFrame, cxr_root: Path, workers: int = 1) -> tuple[pd.DataFrame, list[Problem]]:
    """Decode every qualifying image (``workers`` threads: PIL decodes without the GIL); return the
    images with a ``path`` and ``usable`` column, and a problem row per bad one."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [image_path(int(r.subject_id), int(r.study_id), str(r.dicom_id)) for r in images.itertuples(index=False)]
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        reasons = list(pool.map(lambda rel: check_jpeg(cxr_root / rel), paths))
    problems = [Problem(rel, str(int(hadm)), f"chest X-ray left out: {reason}")
                for rel, hadm, reason in zip(paths, images["hadm_id"], reasons, strict=True) if reason is not None]
    return images.assign(path=paths, usable=[r is None for r in reasons]), problems
