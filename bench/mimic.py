"""Benchmark the mimic-iv importer on a synthetic chartevents (prints measured figures; never run as a test).

    .venv/bin/python bench/mimic.py                      # 20 million chartevents rows
    .venv/bin/python bench/mimic.py --rows 60000000      # a second size: peak memory must not grow with it
    .venv/bin/python bench/mimic.py --rows 2000000 --cache /tmp/mimic-bench

The tree (written once per size into ``--cache``, reused later): 50,000 admissions of 25,000 subjects,
chartevents with ``--rows`` rows over 200 item ids (the seed's 9 among them) spread over the first 10
days of every admission (as in MIMIC-IV, most rows lie outside the 48 h window or belong to items not
selected), small lab and procedure tables, 4,000 admissions with an AP X-ray (tiny JPEGs) and a
radiology note. The import (``require`` all three modalities: a cohort of a few thousand admissions)
runs in a child process; the figures are its wall time, chartevents rows per second, the same rate of
``gzip -dc chartevents.csv.gz | wc -l`` on the same file (the decompression limit), and the child's
peak RSS. Target: import rate ≥ 1.0× the pipe's, peak RSS < 2 GB whatever ``--rows``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ADMISSIONS, SUBJECTS, WITH_CXR, ITEMS = 50_000, 25_000, 4_000, 200
SEED_CHART = {220045: "Heart Rate", 220179: "Non Invasive Blood Pressure systolic",
              220180: "Non Invasive Blood Pressure diastolic", 220181: "Non Invasive Blood Pressure mean",
              220210: "Respiratory Rate", 220277: "O2 saturation pulseoxymetry", 223900: "GCS - Verbal Response",
              220739: "GCS - Eye Opening", 223901: "GCS - Motor Response"}


def write_tree(root: Path, rows: int) -> Path:
    """The synthetic tree under ``root`` (skipped when ``root/done`` exists); returns the MIMIC-IV folder."""
    import duckdb

    from medflow.cohort.importers.mimic_iv.synthetic import _jpeg, write_table

    mimic = root / "mimiciv"
    if (root / "done").is_file():
        return mimic
    for sub in ("hosp", "icu", "cxr", "note/note"):
        (root / ("mimiciv/" + sub if sub in ("hosp", "icu") else sub)).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": 2})
    t0 = time.perf_counter()
    con.execute(f"""CREATE TABLE adm AS SELECT range + 20000000 AS hadm_id, range % {SUBJECTS} + 10000000 AS subject_id,
        TIMESTAMP '2150-01-01' + INTERVAL (range * 7) HOUR AS admittime,
        TIMESTAMP '2150-01-01' + INTERVAL (range * 7) HOUR + INTERVAL (30 + range % 300) HOUR AS dischtime
        FROM range({ADMISSIONS})""")
    con.execute(f"""COPY (SELECT subject_id, hadm_id, admittime, dischtime,
        CASE WHEN hadm_id % 13 = 0 THEN dischtime END AS deathtime, 'EW EMER.' AS admission_type,
        'P1' AS admit_provider_id, 'EMERGENCY ROOM' AS admission_location, 'HOME' AS discharge_location,
        'Medicare' AS insurance, 'ENGLISH' AS language, 'MARRIED' AS marital_status, 'WHITE' AS race,
        NULL AS edregtime, NULL AS edouttime, CAST(hadm_id % 13 = 0 AS INT) AS hospital_expire_flag FROM adm)
        TO '{mimic}/hosp/admissions.csv.gz' (HEADER)""")
    con.execute(f"""COPY (SELECT range + 10000000 AS subject_id, 'F' AS gender, 40 + range % 50 AS anchor_age,
        2150 AS anchor_year, '2011 - 2013' AS anchor_year_group, NULL AS dod FROM range({SUBJECTS}))
        TO '{mimic}/hosp/patients.csv.gz' (HEADER)""")
    items = [{"itemid": i, "label": n, "linksto": "chartevents"} for i, n in SEED_CHART.items()]
    items += [{"itemid": 224000 + k, "label": f"Other item {k}", "linksto": "chartevents"} for k in range(ITEMS - 9)]
    items += [{"itemid": 225752, "label": "PICC Line", "linksto": "procedureevents"}]
    write_table(mimic / "icu/d_items.csv.gz", ["itemid", "label", "abbreviation", "linksto", "category", "unitname",
                                               "param_type", "lownormalvalue", "highnormalvalue"], items)
    write_table(mimic / "hosp/d_labitems.csv.gz", ["itemid", "label", "fluid", "category"],
                [{"itemid": 50931, "label": "Glucose", "fluid": "Blood", "category": "Chemistry"}])
    ids = ", ".join(str(i) for i in [*SEED_CHART, *range(224000, 224000 + ITEMS - 9)])
    # chartevents: row r → admission r % N, item r-th of the list (hash), time 0..240 h after admittime
    con.execute(f"""COPY (SELECT a.subject_id, a.hadm_id, a.hadm_id + 10000000 AS stay_id, 7 AS caregiver_id,
            a.admittime + INTERVAL ((r * 7919) % 14400) MINUTE AS charttime,
            a.admittime + INTERVAL ((r * 7919) % 14400 + 5) MINUTE AS storetime,
            list_extract([{ids}], CAST(hash(r) % {ITEMS} AS INT) + 1) AS itemid,
            CAST(60 + r % 80 AS VARCHAR) AS value, 60 + r % 80 AS valuenum, 'bpm' AS valueuom, 0 AS warning
        FROM (SELECT range AS r FROM range({rows})) JOIN adm a ON a.hadm_id = 20000000 + r % {ADMISSIONS})
        TO '{mimic}/icu/chartevents.csv.gz' (HEADER)""")
    con.execute(f"""COPY (SELECT range AS labevent_id, a.subject_id, a.hadm_id, range AS specimen_id, 50931 AS itemid,
            NULL AS order_provider_id, a.admittime + INTERVAL (range % 96) HOUR AS charttime, NULL AS storetime,
            '120' AS value, 120 AS valuenum, 'mg/dL' AS valueuom, NULL AS ref_range_lower, NULL AS ref_range_upper,
            NULL AS flag, 'STAT' AS priority, NULL AS comments
        FROM range({ADMISSIONS * 4}) JOIN adm a ON a.hadm_id = 20000000 + range % {ADMISSIONS})
        TO '{mimic}/hosp/labevents.csv.gz' (HEADER)""")
    con.execute(f"""COPY (SELECT subject_id, hadm_id, hadm_id + 10000000 AS stay_id, 7 AS caregiver_id,
            admittime + INTERVAL 3 HOUR AS starttime, admittime + INTERVAL 30 HOUR AS endtime, NULL AS storetime,
            225752 AS itemid, 1 AS value, 'None' AS valueuom FROM adm)
        TO '{mimic}/icu/procedureevents.csv.gz' (HEADER)""")
    cxr_rows, note_rows = [], []
    adm = con.execute(f"SELECT hadm_id, subject_id, admittime FROM adm WHERE hadm_id % 12 = 0 LIMIT {WITH_CXR}").fetchall()
    for k, (hadm, subject, admit) in enumerate(adm):
        from datetime import timedelta

        t = admit + timedelta(hours=6 + k % 40)
        s, study, dicom = str(subject), 50000000 + k, f"{k:08x}-0000"
        _jpeg(root / "cxr/files" / f"p{s[:2]}" / f"p{s}" / f"s{study}" / f"{dicom}.jpg", seed=k)
        cxr_rows.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": "AP",
                         "StudyDate": t.strftime("%Y%m%d"), "StudyTime": f"{t.hour * 10000 + t.minute * 100:.3f}"})
        note_rows.append({"note_id": f"{s}-RR-{k}", "subject_id": subject, "hadm_id": hadm, "note_type": "RR",
                          "note_seq": 1, "charttime": str(t), "storetime": str(t), "text": "Portable AP chest.\nNo change."})
    write_table(root / "cxr/mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "subject_id", "study_id", "ViewPosition",
                                                                "StudyDate", "StudyTime"], cxr_rows)
    write_table(root / "note/note/radiology.csv.gz", ["note_id", "subject_id", "hadm_id", "note_type", "note_seq",
                                                      "charttime", "storetime", "text"], note_rows)
    (root / "done").write_text("ok\n")
    print(f"wrote the tree ({rows:,} chartevents rows) in {time.perf_counter() - t0:.0f} s", flush=True)
    return mimic


IMPORT = """
import sys, json, logging
from pathlib import Path
from medflow.cohort.importers import run_importer
root, out = Path(sys.argv[1]), Path(sys.argv[2])
run_importer("mimic-iv", root / "mimiciv", out, cxr_path=str(root / "cxr"), note_path=str(root / "note"),
             workers=int(sys.argv[3]))
print(json.dumps(json.loads((out / "cohort.json").read_text())["flow"]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "medflow-bench" / "mimic")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = args.cache / f"rows{args.rows}"
    write_tree(root, args.rows)
    chart = root / "mimiciv/icu/chartevents.csv.gz"
    out = root / "out"

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", IMPORT, str(root), str(out), str(args.workers)],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: kB

    t0 = time.perf_counter()
    lines = subprocess.run(f"gzip -dc '{chart}' | wc -l", shell=True, capture_output=True, text=True, check=True)
    pipe = time.perf_counter() - t0
    n = int(lines.stdout.strip()) - 1
    size_mb = chart.stat().st_size / 2**20
    print(f"chartevents: {n:,} rows, {size_mb:,.0f} MB gzipped; cohort flow {proc.stdout.strip()}")
    print(f"import (all tables, written outputs): {wall:6.1f} s  {n / wall / 1e6:5.2f} M rows/s  peak RSS {peak_mb:,.0f} MB")
    print(f"gzip -dc | wc -l:                     {pipe:6.1f} s  {n / pipe / 1e6:5.2f} M rows/s")
    print(f"import / pipe rate: {pipe / wall:.2f}x (target >= 1.0x); threads {args.workers}, cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
