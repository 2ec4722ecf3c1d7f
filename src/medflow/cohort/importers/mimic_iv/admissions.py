"""Admissions: the labels (computed on the full table), the window exclusion and the demographics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medflow.cohort.importers.mimic_iv.layout import (
    LONGSTAY_DAYS,
    READMISSION_DAYS,
    admissions_table,
    patients_table,
    race_column,
    require_columns,
    sql_text,
)

if TYPE_CHECKING:
    import duckdb

ADMISSION_COLUMNS = ("subject_id", "hadm_id", "admittime", "dischtime", "deathtime")
DEMOGRAPHIC_COLUMNS = ("insurance", "language", "marital_status")


def read_admissions(con: duckdb.DuckDBPyConnection, root: Path) -> tuple[pd.DataFrame, str]:
    """The whole admissions table (its few columns used here: ~0.5 M rows) joined to patients; and
    the race column's name in the source (``race`` or v1.0's ``ethnicity``)."""
    adm_path, pat_path = admissions_table(root), patients_table(root)
    columns = require_columns(adm_path, ADMISSION_COLUMNS)
    race = race_column(adm_path)
    require_columns(pat_path, ("subject_id", "gender", "anchor_age", "anchor_year"))
    optional = [c for c in (*DEMOGRAPHIC_COLUMNS, "hospital_expire_flag") if c in columns]
    extra = "".join(f", CAST(a.{c} AS VARCHAR) AS {c}" for c in optional)
    query = f"""
        SELECT CAST(a.subject_id AS BIGINT) AS subject_id, CAST(a.hadm_id AS BIGINT) AS hadm_id,
               TRY_CAST(a.admittime AS TIMESTAMP) AS admittime, TRY_CAST(a.dischtime AS TIMESTAMP) AS dischtime,
               TRY_CAST(a.deathtime AS TIMESTAMP) AS deathtime, CAST(a.{race} AS VARCHAR) AS race{extra},
               p.gender, TRY_CAST(p.anchor_age AS DOUBLE) AS anchor_age, TRY_CAST(p.anchor_year AS DOUBLE) AS anchor_year
        FROM read_csv({sql_text(adm_path)}, header = true, all_varchar = true) a
        LEFT JOIN (SELECT subject_id, any_value(gender) AS gender, any_value(anchor_age) AS anchor_age,
                          any_value(anchor_year) AS anchor_year
                   FROM read_csv({sql_text(pat_path)}, header = true, all_varchar = true) GROUP BY subject_id) p
               ON CAST(p.subject_id AS BIGINT) = CAST(a.subject_id AS BIGINT)
    """
    frame = con.execute(query).df()
    for c in (*DEMOGRAPHIC_COLUMNS, "hospital_expire_flag"):
        if c not in frame.columns:
            frame[c] = None
    return frame, race


def label_admissions(adm: pd.DataFrame) -> pd.DataFrame:
    """Add ``mortality``, ``longstay``, ``readmission`` (int 0/1) computed on the full table.

    mortality: died in hospital (``deathtime`` set or ``hospital_expire_flag`` = 1). longstay: stay
    (dischtime − admittime) over 7 days. readmission: the subject's next admission in the *whole*
    admissions table (whether or not it is in the cohort) starts at most 30 days after this
    discharge; 0 for an admission that ended in death.
    """
    adm = adm.sort_values(["subject_id", "admittime", "hadm_id"], kind="stable").reset_index(drop=True)
    expire = pd.to_numeric(adm["hospital_expire_flag"], errors="coerce").fillna(0)
    died = adm["deathtime"].notna() | (expire == 1)
    adm["mortality"] = died.astype(int)
    stay = adm["dischtime"] - adm["admittime"]
    adm["longstay"] = (stay > pd.Timedelta(days=LONGSTAY_DAYS)).astype(int)
    next_admit = adm.groupby("subject_id")["admittime"].shift(-1)
    gap = next_admit - adm["dischtime"]
    adm["readmission"] = (gap.notna() & (gap <= pd.Timedelta(days=READMISSION_DAYS)) & ~died).astype(int)
    return adm


def window_status(adm: pd.DataFrame, window_hours: float) -> pd.Series:
    """Per admission: ``ok``, ``bad_times`` (no admit/discharge time, or discharge before admission)
    or ``ended_in_window`` (discharge or death at most ``window_hours`` after admission)."""
    end = adm["dischtime"].where(adm["deathtime"].isna() | (adm["dischtime"] <= adm["deathtime"]), adm["deathtime"])
    bad = adm["admittime"].isna() | adm["dischtime"].isna() | (adm["dischtime"] < adm["admittime"])
    ended = ~bad & (end <= adm["admittime"] + pd.Timedelta(hours=window_hours))
    return pd.Series(np.select([bad, ended], ["bad_times", "ended_in_window"], "ok"), index=adm.index)


def demographics(cohort: pd.DataFrame) -> pd.DataFrame:
    """One row per admission: age at admission (anchor_age + years since anchor_year), gender, insurance,
    language, marital status, race (v1.0: ethnicity)."""
    age = cohort["anchor_age"] + (cohort["admittime"].dt.year - cohort["anchor_year"])
    return pd.DataFrame(
        {
            "sample_id": cohort["hadm_id"].astype(str),
            "age": age.round().astype("Int64"),
            "gender": cohort["gender"],
            "insurance": cohort["insurance"],
            "language": cohort["language"],
            "marital_status": cohort["marital_status"],
            "race": cohort["race"],
        }
    )
