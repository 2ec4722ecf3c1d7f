"""A tiny MIMIC-IV + MIMIC-CXR-JPG + MIMIC-IV-Note tree in the published layouts (tests, README, bench).

Eight admissions of five subjects, each planted for one cohort rule (``EXPECTED`` says what the
importer must make of them; hours are since admittime, window 48 h):

- 20000001: every modality; events before admission, after 48 h and a urine glucose (all dropped); GCS
  as text; two procedures (one running at admission); AP X-rays at 6 h and 20 h (20 h is taken), PA at
  30 h (view), AP at 50 h (window); notes at 5, 12 h, one without hadm_id at 15 h, one at 60 h (window).
  Readmitted 18 days later as 20000002, which is itself left out (no X-ray): readmission = 1.
- 20000003: died 30 h after admission: ended inside the window.
- 20000004: in-hospital death on day 5; a good AP at 10 h and a truncated JPEG at 40 h (problem row).
- 20000005: no note; 20000006: events only after 48 h; 20000007: its only X-ray is not a JPEG.
- 20000008: everything just inside the window (47.5 h X-ray, 47.9 h note).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

BASE = datetime(2180, 1, 1, 8, 0, 0)
# hadm_id: (subject_id, admit offset days, stay hours, died, insurance)
ADMISSIONS = {
    20000001: (10000001, 0, 11 * 24, False),
    20000002: (10000001, 11 + 18, 3 * 24, False),
    20000003: (10000002, 0, 30, True),
    20000004: (10000002, 10, 5 * 24, True),
    20000005: (10000003, 0, 3 * 24, False),
    20000006: (10000003, 40, 60, False),
    20000007: (10000004, 0, 4 * 24, False),
    20000008: (10000005, 0, 4 * 24, False),
}
EXPECTED = {  # require all three modalities
    "flow": {"admissions_seen": 8, "excluded_bad_times": 0, "excluded_ended_in_window": 1, "after_window_cut": 7,
             "excluded_without_cxr": 2, "excluded_without_notes": 1, "excluded_without_ehr": 1, "n_samples": 3},
    "labels": {"20000001": (0, 1, 1), "20000004": (1, 0, 0), "20000008": (0, 0, 0)},
    "cxr_hours": {"20000001": 20.0, "20000004": 10.0, "20000008": 47.5},
}
CHART = {220045: "Heart Rate", 223900: "GCS - Verbal Response", 220210: "Respiratory Rate"}
PROCEDURES = {225752: "PICC Line", 229351: "Foley Catheter"}
LABS = {50931: ("Glucose", "Blood"), 51478: ("Glucose", "Urine"), 50912: ("Creatinine", "Blood")}


def _t(hadm: int, hours: float) -> datetime:
    _s, day, _stay, _died = ADMISSIONS[hadm]
    return BASE + timedelta(days=day, hours=hours)


def _fmt(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def write_table(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    """A CSV (``.csv.gz`` gzipped) with the columns of the layout; missing cells empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    data = text.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def _admissions(v1: bool) -> tuple[list[str], list[dict[str, Any]]]:
    cols = ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
            *([] if v1 else ["admit_provider_id"]), "admission_location", "discharge_location", "insurance",
            "language", "marital_status", "ethnicity" if v1 else "race", "edregtime", "edouttime",
            "hospital_expire_flag"]
    rows = []
    for hadm, (subject, _day, stay, died) in ADMISSIONS.items():
        end = _t(hadm, stay)
        rows.append({"subject_id": subject, "hadm_id": hadm, "admittime": _fmt(_t(hadm, 0)), "dischtime": _fmt(end),
                     "deathtime": _fmt(end) if died else "", "admission_type": "EW EMER.",
                     "discharge_location": "DIED" if died else "HOME", "insurance": "Medicare", "language": "ENGLISH",
                     "marital_status": "MARRIED", "ethnicity" if v1 else "race": "WHITE",
                     "hospital_expire_flag": int(died)})
    return cols, rows


def _chart() -> list[dict[str, Any]]:
    rows = []
    def add(hadm: int, hours: float, item: int, value: str, num: float | None) -> None:
        rows.append({"subject_id": ADMISSIONS[hadm][0], "hadm_id": hadm, "stay_id": hadm + 10**7,
                     "charttime": _fmt(_t(hadm, hours)), "itemid": item, "value": value, "valuenum": num})
    for h, v in ((-2, 99), (1, 88), (10, 92), (47, 101), (50, 130)):
        add(20000001, h, 220045, str(v), v)
    add(20000001, 5, 223900, "Confused", 4)
    add(20000001, 6, 220210, "", 18)  # value empty: valuenum taken
    add(20000001, 7, 999999, "7", 7)  # an item not selected
    for hadm in (20000002, 20000003, 20000004, 20000005, 20000007, 20000008):
        add(hadm, 3, 220045, "80", 80)
    add(20000006, 55, 220045, "80", 80)
    return rows


def _labs() -> list[dict[str, Any]]:
    rows = []
    for i, (hadm, hours, item, value) in enumerate(((20000001, 3, 50931, "140"), (20000001, 4, 51478, "NEG"),
                                                    (20000001, 60, 50912, "1.1"), (20000004, 8, 50912, "2.3"))):
        rows.append({"labevent_id": i + 1, "subject_id": ADMISSIONS[hadm][0], "hadm_id": hadm, "specimen_id": i,
                     "itemid": item, "charttime": _fmt(_t(hadm, hours)), "value": value,
                     "valuenum": value if value[0].isdigit() else None, "priority": "STAT"})
    return rows


def _procedures() -> list[dict[str, Any]]:
    rows = []
    for hadm, item, start, end in ((20000001, 229351, 2, 30), (20000001, 225752, -5, 100)):
        rows.append({"subject_id": ADMISSIONS[hadm][0], "hadm_id": hadm, "stay_id": hadm + 10**7,
                     "starttime": _fmt(_t(hadm, start)), "endtime": _fmt(_t(hadm, end)), "itemid": item, "value": 1})
    return rows


def _jpeg(path: Path, *, seed: int, broken: str = "") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    if broken == "truncated":
        data = data[: len(data) // 2]
    elif broken == "garbage":
        data = b"this is not a JPEG file" * 10
    path.write_bytes(data)


def _cxr(root: Path, suffix: str) -> None:
    images = [(20000001, 6, "AP", ""), (20000001, 20, "AP", ""), (20000001, 30, "PA", ""), (20000001, 50, "AP", ""),
              (20000004, 10, "AP", ""), (20000004, 40, "AP", "truncated"), (20000005, 12, "AP", ""),
              (20000006, 12, "AP", ""), (20000007, 12, "AP", "garbage"), (20000008, 47.5, "AP", ""),
              (20000003, 5, "AP", "")]
    rows = []
    for k, (hadm, hours, view, broken) in enumerate(images):
        subject, t = ADMISSIONS[hadm][0], _t(hadm, hours)
        study, dicom = 50000000 + k, f"{k:08x}-deadbeef"
        clock = t.hour * 10000 + t.minute * 100 + t.second  # HHMMSS.fff as a number: leading zeros dropped
        rows.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                     "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)", "ViewPosition": view,
                     "Rows": 64, "Columns": 64, "StudyDate": t.strftime("%Y%m%d"), "StudyTime": f"{clock:.3f}"})
        s = str(subject)
        _jpeg(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{study}" / f"{dicom}.jpg", seed=k, broken=broken)
    cols = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
            "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
            "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
    write_table(root / f"mimic-cxr-2.0.0-metadata{suffix}", cols, rows)


def _notes(root: Path, suffix: str) -> None:
    notes = [(20000001, 5, True, 'EXAM: CHEST (PORTABLE AP)\nFINDINGS: "mild" edema, no effusion.'),
             (20000001, 12, True, "Stable lines."), (20000001, 15, False, "No hadm_id: matched by time."),
             (20000001, 60, True, "After the window: expired."), (20000004, 9, True, "Bilateral opacities."),
             (20000006, 20, True, "Clear lungs."), (20000007, 20, True, "Clear."), (20000008, 47.9, True, "Late, inside.")]
    rows = []
    for k, (hadm, hours, with_hadm, text) in enumerate(notes):
        subject = ADMISSIONS[hadm][0]
        rows.append({"note_id": f"{subject}-RR-{k}", "subject_id": subject, "hadm_id": hadm if with_hadm else "",
                     "note_type": "RR", "note_seq": k, "charttime": _fmt(_t(hadm, hours)),
                     "storetime": _fmt(_t(hadm, hours + 1)), "text": text})
    write_table(root / "note" / f"radiology{suffix}",
                ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"], rows)


def write_mimic_tree(root: Path, *, v1: bool = False, gz: bool = True) -> tuple[Path, Path, Path]:
    """Write ``root/{mimiciv,mimic-cxr-jpg,mimic-iv-note}``; return those three roots.

    ``v1``: MIMIC-IV v1.0 (admissions and patients in ``core/``, ``ethnicity``); ``gz``: ``.csv.gz``
    tables (else ``.csv``).
    """
    sfx = ".csv.gz" if gz else ".csv"
    mimic, cxr, note = root / "mimiciv", root / "mimic-cxr-jpg", root / "mimic-iv-note"
    core = mimic / ("core" if v1 else "hosp")
    cols, rows = _admissions(v1)
    write_table(core / f"admissions{sfx}", cols, rows)
    write_table(core / f"patients{sfx}", ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
                [{"subject_id": s, "gender": "F", "anchor_age": 60 + i, "anchor_year": 2180,
                  "anchor_year_group": "2011 - 2013"} for i, s in enumerate(sorted({a[0] for a in ADMISSIONS.values()}))])
    write_table(mimic / "icu" / f"chartevents{sfx}",
                ["subject_id", "hadm_id", "stay_id", *([] if v1 else ["caregiver_id"]), "charttime", "storetime",
                 "itemid", "value", "valuenum", "valueuom", "warning"], _chart())
    write_table(mimic / "icu" / f"d_items{sfx}",
                ["itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type",
                 "lownormalvalue", "highnormalvalue"],
                [{"itemid": i, "label": n, "linksto": "chartevents"} for i, n in CHART.items()]
                + [{"itemid": i, "label": n, "linksto": "procedureevents"} for i, n in PROCEDURES.items()])
    write_table(mimic / "icu" / f"procedureevents{sfx}",
                ["subject_id", "hadm_id", "stay_id", *([] if v1 else ["caregiver_id"]), "starttime", "endtime",
                 "storetime", "itemid", "value", "valueuom"], _procedures())
    write_table(mimic / "hosp" / f"labevents{sfx}",
                ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid",
                 *([] if v1 else ["order_provider_id"]), "charttime", "storetime", "value", "valuenum", "valueuom",
                 "ref_range_lower", "ref_range_upper", "flag", "priority", "comments"], _labs())
    write_table(mimic / "hosp" / f"d_labitems{sfx}", ["itemid", "label", "fluid", "category"],
                [{"itemid": i, "label": n, "fluid": f, "category": "Chemistry"} for i, (n, f) in LABS.items()])
    _cxr(cxr, sfx)
    _notes(note, sfx)
    return mimic, cxr, note


def write_random_tree(root: Path, *, subjects: int = 120, seed: int = 0) -> tuple[Path, Path, Path]:
    """A larger random tree in the same layout (v2.x, ``.csv.gz``): 1–3 admissions per subject, some
    ending inside 48 h, ~15 % deaths, hourly chart items, labs, a procedure, an AP X-ray for ~90 % and
    radiology notes for ~90 % of the admissions. For workflow runs on an imported tree (no planted signal)."""
    rng = np.random.default_rng(seed)
    mimic, cxr, note = root / "mimiciv", root / "mimic-cxr-jpg", root / "mimic-iv-note"
    adm, chart, labs, procs, meta, notes = [], [], [], [], [], []
    hadm = 21000000
    for s in range(subjects):
        subject, t = 11000000 + s, BASE + timedelta(days=int(rng.integers(0, 3000)))
        for _ in range(int(rng.integers(1, 4))):
            hadm += 1
            stay = float(rng.choice([rng.uniform(20, 47), rng.uniform(50, 400)], p=[0.1, 0.9]))
            died = bool(rng.random() < 0.15)
            end = t + timedelta(hours=stay)
            adm.append({"subject_id": subject, "hadm_id": hadm, "admittime": _fmt(t), "dischtime": _fmt(end),
                        "deathtime": _fmt(end) if died else "", "discharge_location": "DIED" if died else "HOME",
                        "insurance": str(rng.choice(["Medicare", "Medicaid", "Other"])), "language": "ENGLISH",
                        "marital_status": str(rng.choice(["MARRIED", "SINGLE", "WIDOWED"])), "race": "WHITE",
                        "hospital_expire_flag": int(died)})
            for h in np.arange(rng.uniform(0, 2), min(stay, 72), 2.0):
                ct = _fmt(t + timedelta(hours=float(h)))
                chart.append({"subject_id": subject, "hadm_id": hadm, "charttime": ct, "itemid": 220045,
                              "value": str(int(rng.normal(85 + 10 * died, 10))), "valuenum": None})
                chart.append({"subject_id": subject, "hadm_id": hadm, "charttime": ct, "itemid": 223900,
                              "value": str(rng.choice(["Oriented", "Confused"], p=[0.8 - 0.4 * died, 0.2 + 0.4 * died]))})
                if h % 12 < 2:
                    labs.append({"subject_id": subject, "hadm_id": hadm, "itemid": 50912, "charttime": ct,
                                 "value": f"{rng.uniform(0.5, 2.5):.1f}"})
            procs.append({"subject_id": subject, "hadm_id": hadm, "itemid": 229351, "starttime": _fmt(t + timedelta(hours=2)),
                          "endtime": _fmt(t + timedelta(hours=float(rng.uniform(3, 100))))})
            if rng.random() < 0.9:
                k, taken = len(meta), t + timedelta(hours=float(rng.uniform(0, 47)))
                study, dicom = 52000000 + k, f"{k:08x}-cafe"
                meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": "AP",
                             "StudyDate": taken.strftime("%Y%m%d"),
                             "StudyTime": f"{taken.hour * 10000 + taken.minute * 100 + taken.second:.3f}"})
                _jpeg(cxr / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", seed=k)
            if rng.random() < 0.9:
                for _n in range(int(rng.integers(1, 3))):
                    nt = t + timedelta(hours=float(rng.uniform(0, 47)))
                    words = rng.choice(["effusion", "clear", "opacity", "stable", "edema", "normal"], 6)
                    notes.append({"note_id": f"{subject}-RR-{len(notes)}", "subject_id": subject, "hadm_id": hadm,
                                  "charttime": _fmt(nt), "text": "Chest radiograph. " + " ".join(words) + "."})
            t = end + timedelta(days=float(rng.uniform(2, 90)))
    cols, _ = _admissions(False)
    write_table(mimic / "hosp/admissions.csv.gz", cols, adm)
    write_table(mimic / "hosp/patients.csv.gz", ["subject_id", "gender", "anchor_age", "anchor_year", "dod"],
                [{"subject_id": 11000000 + s, "gender": "M", "anchor_age": 50, "anchor_year": 2180} for s in range(subjects)])
    write_table(mimic / "icu/chartevents.csv.gz", ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime",
                                                   "storetime", "itemid", "value", "valuenum", "valueuom", "warning"], chart)
    write_table(mimic / "icu/d_items.csv.gz", ["itemid", "label", "linksto"],
                [{"itemid": i, "label": n, "linksto": "chartevents"} for i, n in CHART.items()]
                + [{"itemid": i, "label": n, "linksto": "procedureevents"} for i, n in PROCEDURES.items()])
    write_table(mimic / "icu/procedureevents.csv.gz", ["subject_id", "hadm_id", "stay_id", "starttime", "endtime",
                                                       "itemid", "value"], procs)
    write_table(mimic / "hosp/labevents.csv.gz", ["labevent_id", "subject_id", "hadm_id", "itemid", "charttime",
                                                  "value", "valuenum"], labs)
    write_table(mimic / "hosp/d_labitems.csv.gz", ["itemid", "label", "fluid", "category"],
                [{"itemid": i, "label": n, "fluid": f, "category": "Chemistry"} for i, (n, f) in LABS.items()])
    write_table(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition",
                                                          "StudyDate", "StudyTime"], meta)
    write_table(note / "note/radiology.csv.gz", ["note_id", "subject_id", "hadm_id", "note_type", "note_seq",
                                                 "charttime", "storetime", "text"], notes)
    return mimic, cxr, note
