"""The privacy contract (README, "Privacy"): what outputs may say about input files.

Hospital exports name folders after patients; a DICOM header holds names, ids, dates and free text.
Reports, metrics, predictions and feature/ingest files name neither; manifest.csv and problems.csv
name an input only by the manifest cell the user wrote, and logs (by default) not at all.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from test_workflow import REPO, make_workdir, snakemake

from medflow.ingest import ingest_modality
from medflow.io.dicom_write import FakePatient, write_image, write_series
from medflow.privacy import REDACTED, for_report, redact, spellings
from medflow.problems import BadInputError, Problem, read_problems, write_problems

# --------------------------------------------------------------------------------------- redaction


def test_redact_removes_every_spelling_of_a_path_and_keeps_the_words_around_it(tmp_path):
    root = tmp_path / "export"
    cell = "DOE^JANE_MRN0000000/us.png"
    names = spellings(cell, root)
    reason = f"cannot identify image file '{root / cell}'; us.png: bad header ({cell})"
    out = redact(reason, names)
    assert "DOE^JANE" not in out and "us.png" not in out and str(tmp_path) not in out
    assert out.startswith("cannot identify image file") and "bad header" in out
    assert out.count(REDACTED) == 3


def test_redact_catches_absolute_paths_it_was_not_told_about_but_not_fractions_or_tag_pairs():
    text = "open /srv/pacs/SMITH^JOHN/1.dcm: no; C:\\exports\\SMITH\\2.dcm; 1/2 of N/A; Rows (0028,0010)/Columns"
    out = redact(text)
    assert "SMITH" not in out and "/srv" not in out and "exports" not in out
    assert "1/2 of N/A" in out and "Rows (0028,0010)/Columns" in out


def test_a_report_reason_shows_no_dicom_uid():
    assert for_report("SOPInstanceUID 1.2.826.0.1.3680043.8.498.1 occurs twice") == "SOPInstanceUID <UID> occurs twice"
    assert for_report("spacing 0.7 mm, version 1.2") == "spacing 0.7 mm, version 1.2"


def test_problem_rows_name_the_cell_and_logs_name_only_the_sample(tmp_path, caplog):
    cell = "DOE^JANE_MRN0000000/us.png"
    problem = Problem.about(cell, "s1", f"{tmp_path / cell} is truncated", sources=(tmp_path / cell,), root=tmp_path)
    assert problem.reason == f"{REDACTED} is truncated"
    with caplog.at_level(logging.WARNING):
        write_problems(tmp_path / "us.problems.csv", [problem])
    assert "DOE^JANE" not in caplog.text and "s1" in caplog.text
    assert read_problems(tmp_path / "us.problems.csv")[0].file == cell
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        write_problems(tmp_path / "us.problems.csv", [problem], name_inputs_in_logs=True)
    assert cell in caplog.text


def test_problem_cells_cannot_become_spreadsheet_formulas(tmp_path):
    write_problems(tmp_path / "p.csv", [Problem("=HYPERLINK(\"x\")", "s1", "-1 rows")])
    row = read_problems(tmp_path / "p.csv")[0]
    assert row.file.startswith("'=") and row.reason.startswith("'-")


# ---------------------------------------------------------------------- ingest names no path


def _patient_tree(root: Path) -> pd.DataFrame:
    rows = []
    for i in range(3):
        folder = root / f"DOE^JANE_MRN000000{i}"
        folder.mkdir(parents=True)
        write_image(folder / f"JANE_DOE_{i}.dcm", np.full((8, 8), 40 * i, np.uint8), seed_key=i)
        rows.append({"sample_id": f"s{i}", "us": f"{folder.name}/JANE_DOE_{i}.dcm"})
    bad = root / "DOE^JANE_MRN0000002/JANE_DOE_2.dcm"
    bad.write_bytes(bad.read_bytes()[:300])
    return pd.DataFrame(rows)


def test_image_problems_name_the_cell_and_reasons_name_no_path(tmp_path):
    manifest = _patient_tree(tmp_path / "export")
    out, problems = tmp_path / "out/us.h5", tmp_path / "out/us.problems.csv"
    ingest_modality(manifest, tmp_path / "export", "us", {"kind": "image", "size": [8, 8]}, out, problems)
    [row] = read_problems(problems)
    assert row.file == "DOE^JANE_MRN0000002/JANE_DOE_2.dcm" and row.sample_id == "s2"
    assert "JANE" not in row.reason and str(tmp_path) not in row.reason and "pixel data" in row.reason
    assert b"JANE" not in out.read_bytes() and str(tmp_path).encode() not in out.read_bytes()


def test_a_bad_slice_is_named_by_its_position_in_the_series_folder(tmp_path):
    folder = tmp_path / "SMITH^JOHN_1234"
    names = [f"SMITH_JOHN_{k:02d}.dcm" for k in range(4)]
    paths = write_series(folder, np.zeros((4, 8, 8), np.float32), file_names=names)
    paths[2].write_text("not a DICOM file")
    manifest = pd.DataFrame({"sample_id": ["s1", "s2"], "ct": ["SMITH^JOHN_1234", "SMITH^JOHN_1234"]})
    manifest.loc[1, "ct"] = "absent"
    with pytest.raises(BadInputError, match="no sample could be used"):
        ingest_modality(manifest, tmp_path, "ct", {"kind": "slices", "size": [8, 8]}, tmp_path / "ct.h5",
                        tmp_path / "ct.problems.csv")
    rows = {p.sample_id: p for p in read_problems(tmp_path / "ct.problems.csv")}
    assert rows["s1"].file == "SMITH^JOHN_1234"
    assert "file 3 of 4 of the series folder" in rows["s1"].reason and "SMITH" not in rows["s1"].reason
    assert not (tmp_path / "ct.h5").exists()


# ------------------------------------------------------------------- a modality with nothing usable


def test_a_table_without_its_key_column_stops_the_run_naming_file_and_column(tmp_path):
    (tmp_path / "clinical.csv").write_text("patient,age\np1,50\n")
    manifest = pd.DataFrame({"sample_id": ["p1"]})
    with pytest.raises(BadInputError) as err:
        ingest_modality(manifest, tmp_path, "clinical", {"kind": "table", "file": "clinical.csv"},
                        tmp_path / "clinical.parquet", tmp_path / "clinical.problems.csv", on_bad_input="skip")
    assert "'clinical.csv'" in str(err.value) and "'sample_id'" in str(err.value)
    assert not (tmp_path / "clinical.parquet").exists()
    assert read_problems(tmp_path / "clinical.problems.csv")[0].file == "clinical.csv"


def test_a_modality_whose_every_file_fails_stops_the_run_under_skip(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    manifest = pd.DataFrame({"sample_id": ["s1"], "us": ["a.png"]})
    with pytest.raises(BadInputError, match="us: no sample could be used"):
        ingest_modality(manifest, tmp_path, "us", {"kind": "image", "size": [8, 8]}, tmp_path / "us.h5",
                        tmp_path / "us.problems.csv", on_bad_input="skip")


# ------------------------------------------------------------------ the canary cohort, end to end

PATH_CANARY = "PATHCANARY"
HEADER_CANARIES = {
    "PatientName": "HDRCANARY^NAME",
    "PatientID": "HDRCANARYMRN",
    "PatientBirthDate": "18880808",
    "InstitutionName": "HDRCANARY INSTITUTION",
    "AccessionNumber": "HDRCANARYACC",
    "ImageComments": "HDRCANARY free-text comment",
    "StudyDescription": "HDRCANARY study description",
}
N_PATIENTS = 40


def _stamp_headers(path: Path) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in HEADER_CANARIES.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def _canary_cohort(root: Path) -> Path:
    """A hospital-export-like cohort: patient-named folders and files, canary DICOM headers, a
    truncated image, a non-DICOM slice, and a planted signal so that every split has both classes."""
    rng = np.random.default_rng(7)
    patient = FakePatient(name=HEADER_CANARIES["PatientName"], patient_id=HEADER_CANARIES["PatientID"],
                          birth_date=HEADER_CANARIES["PatientBirthDate"],
                          institution=HEADER_CANARIES["InstitutionName"])
    rows, clinical = [], []
    for i in range(N_PATIENTS):
        y = i % 2
        folder = root / f"{PATH_CANARY}_DOE^JANE_MRN{i:07d}"
        folder.mkdir(parents=True)
        pixels = np.clip(rng.normal(60 + 40 * y, 20, (24, 24)), 0, 255).astype(np.uint8)
        scan = write_image(folder / f"{PATH_CANARY}_scan_{i}.dcm", pixels, patient=patient, seed_key=("scan", i))
        _stamp_headers(scan)
        series = folder / f"{PATH_CANARY}_ct_series"
        for path in write_series(series, rng.normal(0, 50, (3, 8, 8)).astype(np.float32), patient=patient,
                                 seed_key=("ct", i), file_names=[f"{PATH_CANARY}_slice_{k}.dcm" for k in range(3)]):
            _stamp_headers(path)
        rows.append({"sample_id": f"p{i:03d}", "patient_id": f"p{i:03d}", "center": "A", "y": y,
                     "scan": str(scan.relative_to(root)), "ct": str(series.relative_to(root))})
        clinical.append({"sample_id": f"p{i:03d}", "age": 50 + i % 7})
    truncated = root / rows[0]["scan"]
    truncated.write_bytes(truncated.read_bytes()[:400])
    (root / rows[1]["ct"] / f"{PATH_CANARY}_slice_1.dcm").write_text(f"{HEADER_CANARIES['PatientName']} was here")
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    pd.DataFrame(clinical).to_csv(root / "clinical.csv", index=False)
    return root / "manifest.csv"


def _canary_config(manifest: Path) -> dict:
    tiny = yaml.safe_load((REPO / "tests/cluster/tiny.yaml").read_text())
    tiny["studies"] = {"canary": {
        "description": "privacy canary",
        "sample_unit": "patient",
        "cohort": {"source": "manifest", "path": str(manifest)},
        "labels": ["y"],
        "modalities": {
            "scan": {"kind": "image", "size": [24, 24], "channels": 1},
            "ct": {"kind": "slices", "size": [8, 8]},
            "clinical": {"kind": "table", "file": "clinical.csv"},
        },
        "split": {"seed": 3, "fractions": {"train": 0.5, "val": 0.25, "test": 0.25}, "stratify": "y"},
        "stage1": {"scan-convnet": {"modality": "scan", "model": "convnet",
                                    "train": {"epochs": 1, "batch_size": 8, "workers": 0, "lr": 0.003}}},
        "stage2": {"logreg": {"type": "logreg", "inputs": ["scan-convnet", "clinical"], "cv_folds": 2}},
    }}
    return tiny


def _allowed_path_hits(path: Path, results: Path) -> bool:
    """manifest.csv holds the cells; problems.csv may name them in its file column only."""
    relative = path.relative_to(results.parent).as_posix()
    if relative == "results/canary/manifest.csv":
        return True
    if relative.endswith(".problems.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return not frame["reason"].str.contains(PATH_CANARY).any() and not frame["sample_id"].str.contains(PATH_CANARY).any()
    return False


@pytest.mark.slow
def test_canary_cohort_leaks_no_header_text_anywhere_and_paths_only_where_allowed(tmp_path):
    manifest = _canary_cohort(tmp_path / "export")
    (tmp_path / "work").mkdir()
    workdir = make_workdir(tmp_path / "work")
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(_canary_config(manifest)))
    snakemake(workdir, "--cores", "2", "results/canary/report.html", "results/canary/ingest/ct.h5")

    problems = {
        m: pd.read_csv(workdir / f"results/canary/ingest/{m}.problems.csv", dtype=str) for m in ("scan", "ct")
    }
    assert problems["scan"]["sample_id"].tolist() == ["p000"] and problems["ct"]["sample_id"].tolist() == ["p001"]
    assert "file 2 of 3 of the series folder" in problems["ct"]["reason"][0]
    page = (workdir / "results/canary/scan-convnet_report.html").read_text()
    assert "p000" in page  # the report lists the excluded sample, by id

    header_needles = [v.encode() for v in HEADER_CANARIES.values()]
    scanned, path_hits, header_hits = 0, [], []
    for folder in ("results", "logs"):
        for path in sorted((workdir / folder).rglob("*")):
            if not path.is_file():
                continue
            scanned += 1
            blob = path.read_bytes()
            header_hits += [(path, n) for n in header_needles if n in blob]
            if PATH_CANARY.encode() in blob:
                path_hits.append(path)
    allowed = [p for p in path_hits if _allowed_path_hits(p, workdir / "results")]
    print(f"canary scan: {scanned} files, {len(header_hits)} header hits, {len(path_hits)} files with path "
          f"canaries ({len(allowed)} allowed: {sorted(p.name for p in allowed)})")
    assert scanned > 30
    assert header_hits == []
    assert path_hits == allowed and len(allowed) == 3  # manifest.csv and the two problems.csv
    shutil.rmtree(tmp_path / "export")  # nothing downstream still needs the source files
