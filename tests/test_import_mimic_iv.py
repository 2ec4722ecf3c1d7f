"""The mimic-iv importer on small trees in the published layouts (written by medflow's synthetic module).

Every cohort rule of issue 13 has a planted admission (see medflow.cohort.importers.mimic_iv.synthetic).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medflow.cli import main
from medflow.cohort.importers import ImporterError, get_importer, run_importer, tracked_input
from medflow.cohort.importers.mimic_iv.synthetic import EXPECTED, write_mimic_tree
from medflow.cohort.manifest import load_manifest
from medflow.config import check_config, ingest_spec
from medflow.ingest.run import ingest_modality


def _import(tmp_path: Path, name: str = "out", *, v1: bool = False, gz: bool = True, **options) -> Path:
    raw = tmp_path / "raw"
    if not raw.exists():
        write_mimic_tree(raw, v1=v1, gz=gz)
    options = {"cxr_path": str(raw / "mimic-cxr-jpg"), "note_path": str(raw / "mimic-iv-note"), **options}
    return run_importer("mimic-iv", raw / "mimiciv", tmp_path / name, workers=1, **options)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    return _import(tmp_path_factory.mktemp("mimic")).parent


def test_cohort_flow_counts(imported):
    info = json.loads((imported / "cohort.json").read_text())
    assert {k: info["flow"][k] for k in EXPECTED["flow"]} == EXPECTED["flow"]
    assert info["require"] == ["ehr", "cxr", "notes"]
    assert info["version"] == "v2+ (hosp/, race)"
    assert info["warnings"][0].startswith("Cohort flow (import): 8 admissions; 1 ended within 48 h")
    assert info["modalities_present"] == {"ehr": 3, "cxr": 3, "notes": 3}


def test_labels_on_the_full_admissions_table(imported):
    manifest = _read(imported / "manifest.csv")
    assert manifest["sample_id"].tolist() == list(EXPECTED["labels"])
    got = {r.sample_id: (int(r.mortality), int(r.longstay), int(r.readmission)) for r in manifest.itertuples()}
    assert got == EXPECTED["labels"]  # 20000001 is readmitted through 20000002, which is not in the cohort
    assert "20000002" not in set(manifest["sample_id"])
    assert "20000003" not in set(manifest["sample_id"])  # died 30 h after admission: inside the window
    assert set(manifest["center"]) == {"mimic-iv"}
    assert manifest.set_index("sample_id").at["20000004", "patient_id"] == "10000002"


def test_cxr_last_ap_image_inside_the_window(imported):
    manifest = _read(imported / "manifest.csv").set_index("sample_id")
    assert {s: float(h) for s, h in manifest["cxr_hours"].items()} == EXPECTED["cxr_hours"]
    for cell in manifest["cxr"]:
        assert (imported / cell).is_file() and cell.endswith(".jpg")
    listing = _read(imported / "cxr_images.csv")
    # 20000001: AP at 6 h and 20 h; the PA (30 h) and the AP after the window (50 h) are not listed
    assert listing.loc[listing["sample_id"] == "20000001", "hours"].astype(float).tolist() == [6.0, 20.0]
    assert set(listing["view"]) == {"AP"}


def test_corrupt_jpeg_is_a_problem_row_and_the_admission_goes_on(imported):
    problems = _read(imported / "import_problems.csv")
    assert problems["sample_id"].tolist() == ["20000004", "20000007"]
    assert problems["file"].str.match(r"^files/p10/p\d{8}/s\d+/[0-9a-f]{8}-deadbeef\.jpg$").all()
    assert problems["reason"].str.contains("does not decode").all()
    manifest = _read(imported / "manifest.csv").set_index("sample_id")
    assert "20000004" in manifest.index  # its earlier AP at 10 h is used


def test_events_window_items_and_values(imported):
    events = _read(imported / "events.csv")
    assert list(events.columns) == ["admission_id", "hours", "variable", "value"]
    hours = events["hours"].astype(float)
    assert hours.between(0, 48).all()
    one = events[events["admission_id"] == "20000001"]
    rows = list(zip(one["hours"].astype(float), one["variable"], one["value"], strict=True))
    assert (5.0, "GCS - Verbal Response", "Confused") in rows  # text kept as text
    assert [r for r in rows if r[1] == "Heart Rate"] == [(1.0, "Heart Rate", "88"), (10.0, "Heart Rate", "92"),
                                                         (47.0, "Heart Rate", "101")]  # -2 h and 50 h cut
    assert [r for r in rows if r[1] == "Glucose"] == [(3.0, "Glucose", "140")]  # the urine glucose is not a blood lab
    assert float(dict((r[1], r[2]) for r in rows)["Respiratory Rate"]) == 18.0  # empty value: valuenum
    assert [r for r in rows if r[1] in ("Foley Catheter", "PICC Line")] == [
        (0.0, "PICC Line", "1"), (2.0, "Foley Catheter", "1"), (30.0, "Foley Catheter", "0")]
    assert "Creatinine" not in set(one["variable"])  # only at 60 h
    assert set(events["admission_id"]) == set(EXPECTED["labels"])


def test_notes_inside_the_window_in_time_order(imported):
    manifest = _read(imported / "manifest.csv").set_index("sample_id")
    folder = imported / manifest.at["20000001", "notes"]
    assert sorted(p.name for p in folder.iterdir()) == ["005.0_radiology.txt", "012.0_radiology.txt",
                                                        "015.0_radiology.txt"]  # 15 h: no hadm_id, matched by time
    assert '"mild" edema' in (folder / "005.0_radiology.txt").read_text()
    assert [p.name for p in (imported / "notes" / "20000008").iterdir()] == ["047.9_radiology.txt"]
    assert sorted(p.name for p in (imported / "notes").iterdir()) == sorted(EXPECTED["labels"])
    # the note text reaches only the note files
    for name in ("manifest.csv", "cohort.json", "events.csv", "cxr_images.csv", "demographics.csv"):
        assert "edema" not in (imported / name).read_text() and "expired" not in (imported / name).read_text()


def test_demographics_table(imported):
    demo = _read(imported / "demographics.csv")
    assert demo.columns.tolist() == ["sample_id", "age", "gender", "insurance", "language", "marital_status", "race"]
    assert demo.set_index("sample_id").at["20000004", "age"] == "61"


def test_views_option_takes_other_views(tmp_path):
    manifest = _read(_import(tmp_path, views="AP,PA")).set_index("sample_id")
    assert float(manifest.at["20000001", "cxr_hours"]) == 30.0  # the PA is now the last image in the window


def test_require_fewer_modalities_keeps_admissions_without_them(tmp_path):
    manifest = _read(_import(tmp_path, require=["ehr"])).set_index("sample_id")
    assert sorted(manifest.index) == ["20000001", "20000002", "20000004", "20000005", "20000007", "20000008"]
    assert manifest.at["20000002", "cxr"] == "" and manifest.at["20000002", "cxr_hours"] == ""
    assert manifest.at["20000005", "notes"] == ""
    assert manifest.at["20000002", "readmission"] == "0"
    info = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert info["flow"]["without_cxr"] == 2 and "excluded_without_cxr" not in info["flow"]


def test_window_hours_option_cuts_every_modality(tmp_path):
    out = _import(tmp_path, window_hours=24).parent
    manifest = _read(out / "manifest.csv").set_index("sample_id")
    assert "20000008" not in manifest.index  # its only X-ray is at 47.5 h
    assert _read(out / "events.csv")["hours"].astype(float).max() <= 24
    assert float(manifest["cxr_hours"].astype(float).max()) <= 24


def test_item_overrides(tmp_path):
    events = _read(_import(tmp_path, lab_items="Creatinine", chart_items=["Heart Rate"], procedure_items="EEG").parent
                   / "events.csv")
    assert set(events["variable"]) == {"Heart Rate", "Creatinine"}
    info = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert any("'EEG'" in w for w in info["warnings"])


def test_v1_layout_and_plain_csv_give_the_same_cohort(tmp_path, imported):
    out = _import(tmp_path, v1=True, gz=False).parent
    assert (tmp_path / "raw" / "mimiciv" / "core" / "admissions.csv").is_file()
    for name in ("events.csv", "demographics.csv", "import_problems.csv"):
        assert (out / name).read_text() == (imported / name).read_text()
    a, b = _read(out / "manifest.csv"), _read(imported / "manifest.csv")
    pd.testing.assert_frame_equal(a.drop(columns="cxr"), b.drop(columns="cxr"))
    info = json.loads((out / "cohort.json").read_text())
    assert info["version"] == "v1.0 (core/, ethnicity)"
    assert info["flow"] == json.loads((imported / "cohort.json").read_text())["flow"]


def test_required_modality_without_its_source_is_refused(tmp_path):
    write_mimic_tree(tmp_path / "raw")
    with pytest.raises(ImporterError, match="require lists cxr but cxr_path is not set"):
        run_importer("mimic-iv", tmp_path / "raw" / "mimiciv", tmp_path / "out")
    with pytest.raises(ImporterError, match="unknown modality ecg"):
        _import(tmp_path, require="ehr,ecg")
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_manifest_validates_and_ingests_as_the_ehr_study(imported, tmp_path):
    study = check_config({"studies": {"ehr": {
        "cohort": {"source": "mimic-iv", "path": "x", "cxr_path": "y", "note_path": "z", "views": ["AP"],
                   "require": ["ehr", "cxr", "notes"], "lab_items": ["Calcium, Total"]},
        "labels": ["mortality", "longstay", "readmission"], "window_hours": 48,
        "modalities": {"ehr": {"kind": "events", "file": "events.csv"}, "cxr": {"kind": "image", "size": [64, 64]},
                       "notes": {"kind": "notes"}},
        "split": {}}}})["studies"]["ehr"]
    cohort = load_manifest(imported / "manifest.csv", study, missing_files="error")
    assert len(cohort.manifest) == 3 and not cohort.warnings
    # ingest takes every modality of every sample: nothing the importer kept lies outside the window
    for modality, suffix in (("ehr", "parquet"), ("cxr", "h5"), ("notes", "parquet")):
        out = tmp_path / f"{modality}.{suffix}"
        summary = ingest_modality(cohort.manifest, imported, modality, ingest_spec(study, modality), out,
                                  tmp_path / f"{modality}.problems.csv", progress=False)
        assert (summary.n_ok, summary.n_problems) == (3, 0), modality
    notes = pd.read_parquet(tmp_path / "notes.parquet")
    assert notes.groupby("sample_id").size().to_dict() == {"20000001": 3, "20000004": 1, "20000008": 1}
    events = pd.read_parquet(tmp_path / "ehr.parquet")
    assert len(events) == len(_read(imported / "events.csv"))


def test_cli_and_registry(tmp_path):
    raw = tmp_path / "raw"
    mimic, cxr, note = write_mimic_tree(raw)
    assert main(["import", "mimic-iv", str(mimic), str(tmp_path / "out"), "--cxr-path", str(cxr),
                 "--note-path", str(note), "--workers", "1"]) == 0
    assert len(_read(tmp_path / "out" / "manifest.csv")) == 3
    assert Path(tracked_input("mimic-iv", {"path": str(mimic)})).is_file()
    options = {o.name: o.default for o in get_importer("mimic-iv").options}
    assert options["window_hours"] == 48.0 and options["views"] == "AP" and options["require"] == "ehr,cxr,notes"


def test_ehr_only_without_the_other_sources(tmp_path):
    mimic, _cxr, _note = write_mimic_tree(tmp_path / "raw")
    manifest = _read(run_importer("mimic-iv", mimic, tmp_path / "out", require="ehr", workers=1))
    assert len(manifest) == 6 and set(manifest["cxr"]) == {""} and set(manifest["notes"]) == {""}
    assert _read(tmp_path / "out" / "cxr_images.csv").empty


def test_a_broken_table_names_no_row_of_it(tmp_path):
    mimic, cxr, note = write_mimic_tree(tmp_path / "raw")
    chart = mimic / "icu" / "chartevents.csv.gz"
    chart.write_bytes(chart.read_bytes()[: chart.stat().st_size * 2 // 3])
    with pytest.raises(ImporterError, match="cannot be decompressed") as err:
        run_importer("mimic-iv", mimic, tmp_path / "out", cxr_path=str(cxr), note_path=str(note), workers=1)
    text = str(err.value) + str(err.value.__context__ or "")
    assert "Confused" not in text and "10000001" not in text
    assert not (tmp_path / "out" / "manifest.csv").exists()
    assert not list((tmp_path / "out").glob(".duckdb_tmp"))


def test_plain_gzip_and_no_prefilter_give_the_same_events(tmp_path, imported, monkeypatch):
    from medflow.cohort.importers.mimic_iv import streams

    monkeypatch.setattr(streams, "decompressor", lambda: ["gzip", "-dc"])
    out = _import(tmp_path, "gzip").parent
    assert (out / "events.csv").read_text() == (imported / "events.csv").read_text()
    monkeypatch.setattr(streams.shutil, "which", lambda name: None)  # no gzip/grep: DuckDB reads the .gz itself
    out = _import(tmp_path, "direct").parent
    assert (out / "events.csv").read_text() == (imported / "events.csv").read_text()


def test_the_workflow_imports_the_ehr_study_from_mimic(tmp_path):
    """import_cohort gets the cohort settings and the study's window as options; validate_manifest accepts it."""
    import shutil
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).parents[1]
    for item in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = repo / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    mimic, cxr, note = write_mimic_tree(tmp_path / "raw")
    config = yaml.safe_load((tmp_path / "config/config.yaml").read_text())
    config["studies"] = {"ehr": config["studies"]["ehr"]}
    config["studies"]["ehr"]["cohort"] = {"source": "mimic-iv", "path": str(mimic), "cxr_path": str(cxr),
                                          "note_path": str(note), "views": ["AP"], "require": ["ehr", "cxr", "notes"]}
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "results/ehr/manifest.csv"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = _read(tmp_path / "results/ehr/manifest.csv")
    assert manifest["sample_id"].tolist() == list(EXPECTED["labels"])
    info = json.loads((tmp_path / "results/ehr/cohort.json").read_text())
    assert any(w.startswith("Cohort flow (import): 8 admissions") for w in info["warnings"])
