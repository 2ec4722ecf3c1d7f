"""Manifest validation: every problem is reported with its row and column."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medflow.cohort.manifest import ManifestError, load_manifest, read_validated, write_validated

STUDY = {
    "labels": ["lnm"],
    "labels_optional": [],
    "cohort": {"source": "manifest", "path": "x", "extra_columns": []},
    "modalities": {
        "tumour_us": {"kind": "image", "size": [8, 8]},
        "clinical": {"kind": "table", "file": "clinical.csv"},
    },
}


def write_cohort(tmp_path: Path, rows: list[dict], files: bool = True) -> Path:
    frame = pd.DataFrame(rows)
    if files and "tumour_us" in frame:
        for value in frame["tumour_us"].dropna():
            if value:
                (tmp_path / value).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / value).write_bytes(b"png")
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    return path


def good_rows(n: int = 4) -> list[dict]:
    return [
        {"sample_id": f"s{i}", "patient_id": f"p{i}", "center": "A", "lnm": i % 2, "tumour_us": f"us/s{i}.png"}
        for i in range(n)
    ]


def problems_of(path: Path, study=STUDY, **kw) -> str:
    with pytest.raises(ManifestError) as err:
        load_manifest(path, study, **kw)
    return str(err.value)


def test_good_manifest_loads_with_typed_labels(tmp_path):
    cohort = load_manifest(write_cohort(tmp_path, good_rows()), STUDY)
    assert list(cohort.manifest["lnm"]) == [0.0, 1.0, 0.0, 1.0]
    assert cohort.resolve("us/s1.png") == tmp_path / "us/s1.png"
    assert cohort.resolve("patches.h5#3", container=True) == tmp_path / "patches.h5"
    assert cohort.resolve("us/scan#2.png") == tmp_path / "us/scan#2.png"  # '#' is part of an ordinary name


def test_duplicate_sample_id_names_the_rows(tmp_path):
    rows = good_rows()
    rows[2]["sample_id"] = "s0"
    msg = problems_of(write_cohort(tmp_path, rows))
    assert "column 'sample_id' has duplicates s0 in rows 2, 4" in msg


def test_missing_file_names_row_and_column_or_warns(tmp_path):
    path = write_cohort(tmp_path, good_rows())
    (tmp_path / "us/s2.png").unlink()
    msg = problems_of(path)
    assert "column 'tumour_us': file not found in row 4" in msg
    assert "s2.png" not in msg  # by row: the message reaches cohort.json and the reports (privacy)
    cohort = load_manifest(path, STUDY, missing_files="warn")
    assert any("row 4" in w for w in cohort.warnings)


@pytest.mark.parametrize("bad", [2, "yes", -1, 0.5])
def test_label_not_binary(tmp_path, bad):
    rows = good_rows()
    rows[1]["lnm"] = bad
    msg = problems_of(write_cohort(tmp_path, rows))
    assert "column 'lnm': labels must be 0 or 1" in msg and "row 3" in msg


def test_empty_label_only_where_optional(tmp_path):
    rows = good_rows()
    rows[0]["lnm"] = None
    path = write_cohort(tmp_path, rows)
    assert "column 'lnm' is empty in row 2" in problems_of(path)
    cohort = load_manifest(path, {**STUDY, "labels_optional": ["lnm"]})
    assert np.isnan(cohort.manifest["lnm"][0])


def test_patient_in_two_centres(tmp_path):
    rows = good_rows()
    rows[1]["patient_id"] = "p0"
    rows[1]["center"] = "B"
    msg = problems_of(write_cohort(tmp_path, rows))
    assert "patient 'p0' appears in several centres (A, B) in rows 2, 3" in msg


def test_unknown_column_and_missing_modality_column(tmp_path):
    rows = good_rows()
    for r in rows:
        r["age"] = 50
    msg = problems_of(write_cohort(tmp_path, rows))
    assert "column 'age' is unknown" in msg and "extra_columns" in msg
    study = {**STUDY, "cohort": {**STUDY["cohort"], "extra_columns": ["age"]}}
    assert len(load_manifest(tmp_path / "manifest.csv", study).manifest) == 4

    rows = [{k: v for k, v in r.items() if k != "tumour_us"} for r in good_rows()]
    msg = problems_of(write_cohort(tmp_path, rows))
    assert "column 'tumour_us' (modality path column) is missing" in msg


def test_all_problems_reported_at_once(tmp_path):
    rows = good_rows()
    rows[0]["center"] = ""
    rows[1]["lnm"] = 7
    rows[3]["split"] = "training"
    with pytest.raises(ManifestError) as err:
        load_manifest(write_cohort(tmp_path, rows), STUDY)
    assert len(err.value.problems) == 3
    assert "column 'split' must be one of train, val, test, external" in str(err.value)


def test_fixed_split_conflict_within_patient(tmp_path):
    rows = good_rows()
    rows[1]["patient_id"] = "p0"
    for r, s in zip(rows, ["train", "test", "", ""], strict=True):
        r["split"] = s
    assert "patient 'p0' has samples fixed to different splits" in problems_of(write_cohort(tmp_path, rows))


def test_empty_path_cell_means_modality_missing_not_an_error(tmp_path):
    rows = good_rows()
    rows[2]["tumour_us"] = ""
    cohort = load_manifest(write_cohort(tmp_path, rows), STUDY)
    assert cohort.manifest["tumour_us"].isna().tolist() == [False, False, True, False]


def test_unreadable_and_missing_manifest(tmp_path):
    assert "manifest file not found" in problems_of(tmp_path / "nope.csv")
    (tmp_path / "manifest.csv").write_bytes(b"")
    assert "cannot be read as CSV" in problems_of(tmp_path / "manifest.csv")


def test_validated_round_trip_keeps_root_and_types(tmp_path):
    (tmp_path / "cohort.json").write_text(json.dumps({"grouping": "none", "source": "manifest"}))
    cohort = load_manifest(write_cohort(tmp_path, good_rows()), STUDY)
    assert any("not known" in w for w in cohort.warnings)
    out = tmp_path / "results"
    write_validated(cohort, out / "manifest.csv", out / "cohort.json", source="m.csv", labels=["lnm"])
    again = read_validated(out / "manifest.csv")
    assert again.root == tmp_path and again.grouping == "none"
    assert again.manifest["lnm"].dtype == "float64"
    assert again.manifest["sample_id"].tolist() == ["s0", "s1", "s2", "s3"]
    info = json.loads((out / "cohort.json").read_text())
    assert info["n_samples"] == 4 and info["labels"] == ["lnm"] and len(info["manifest_hash"]) == 16


# --- acquisition times of images and the study's observation window ------------------------------

WINDOWED = {**STUDY, "window_hours": 48}


def test_image_hours_column_is_known_and_parsed(tmp_path):
    rows = good_rows()
    for row, hours in zip(rows, ["3.5", "", "120", "0"], strict=True):
        row["tumour_us_hours"] = hours
    cohort = load_manifest(write_cohort(tmp_path, rows), WINDOWED)
    hours = cohort.manifest["tumour_us_hours"]
    assert hours.dtype == "float64" and hours.isna().tolist() == [False, True, False, False]
    assert hours.dropna().tolist() == [3.5, 120.0, 0.0]  # the window is applied at ingest, not here
    assert cohort.warnings == []
    out = tmp_path / "results"
    write_validated(cohort, out / "manifest.csv", out / "cohort.json", source="m.csv", labels=["lnm"])
    assert read_validated(out / "manifest.csv").manifest["tumour_us_hours"].tolist()[2] == "120.0"


def test_non_numeric_image_hours_name_row_and_column_not_the_value(tmp_path):
    rows = good_rows()
    for row in rows:
        row["tumour_us_hours"] = "12"
    rows[1]["tumour_us_hours"] = "2024-03-01 10:15"
    rows[3]["tumour_us_hours"] = "inf"
    msg = problems_of(write_cohort(tmp_path, rows), WINDOWED)
    assert "column 'tumour_us_hours': hours since admission must be numbers" in msg and "rows 3, 5" in msg
    assert "2024" not in msg


def test_windowed_study_without_image_hours_warns_in_cohort_json(tmp_path, caplog):
    cohort = load_manifest(write_cohort(tmp_path, good_rows()), WINDOWED)
    (warning,) = cohort.warnings
    assert "'tumour_us_hours'" in warning and "cannot verify" in warning and "48 h" in warning
    assert "cannot verify" in caplog.text
    out = tmp_path / "results"
    write_validated(cohort, out / "manifest.csv", out / "cohort.json", source="m.csv", labels=["lnm"])
    assert json.loads((out / "cohort.json").read_text())["warnings"] == [warning]
    assert load_manifest(write_cohort(tmp_path, good_rows()), STUDY).warnings == []  # no window: nothing to check
