"""The RSNA-STR PE importer (train.csv + train/<Study>/<Series>/<SOP>.dcm → manifest, slice labels)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medflow.cohort.importers import ImporterError, get_importer, run_importer
from medflow.cohort.importers.rsna_pe import (
    EXAM_COLUMNS,
    MANIFEST_COLUMNS,
    REQUIRED_COLUMNS,
    SCORED_LABELS,
    import_rsna_pe,
)
from medflow.io.dicom_write import deterministic_uid, write_series
from medflow.problems import read_problems

DEPTH = 8
# study key → (exam labels that are 1, slices (anatomical index) with pe_present_on_image = 1)
STUDIES = {
    "a": ({"rightsided_pe", "rv_lv_ratio_lt_1"}, {2, 3, 4}),
    "b": ({"negative_exam_for_pe"}, set()),
    "c": ({"central_pe", "leftsided_pe", "rv_lv_ratio_gte_1", "chronic_pe"}, {5}),
}


def uid(key: str, *parts: object) -> str:
    return str(deterministic_uid("rsna-test", key, *parts))


def build(root: Path, *, seed: int = 0) -> dict:
    """Write the RSNA layout; rows of train.csv are shuffled (not anatomical, not grouped by study)."""
    rng = np.random.default_rng(1)
    rows = []
    truth = {"exam": {}, "slice": {}, "series": {}}
    for key, (positive, on_slices) in STUDIES.items():
        study, series = uid(key, "study"), uid(key, "series")
        sops = [uid(key, "sop", k) for k in range(DEPTH)]
        write_series(
            root / "train" / study / series,
            rng.normal(0, 50, (DEPTH, 16, 16)),
            study_uid=study,
            series_uid=series,
            sop_uids=sops,
            seed_key=key,
        )
        exam = {c: int(c in positive) for c in EXAM_COLUMNS}
        truth["exam"][study] = exam
        truth["series"][study] = series
        for k, sop in enumerate(sops):
            truth["slice"][sop] = int(k in on_slices)
            rows.append({"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop,
                         "pe_present_on_image": int(k in on_slices), **exam})  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS))
    frame = frame.iloc[np.random.default_rng(seed).permutation(len(frame))].reset_index(drop=True)
    frame.to_csv(root / "train.csv", index=False)
    return truth


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "rsna"
    truth = build(root)
    return root, truth


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def csv_line(root: Path, sop: str) -> int:
    """The line of ``sop`` in train.csv (header = line 1)."""
    frame = read(root / "train.csv")
    return int(np.flatnonzero(frame["SOPInstanceUID"] == sop)[0]) + 2


def test_manifest_one_row_per_study_with_labels_and_series_folder(layout, tmp_path):
    root, truth = layout
    out = tmp_path / "cohort"
    manifest = import_rsna_pe(root, out)
    frame = read(manifest).set_index("sample_id")
    assert list(read(manifest).columns) == list(MANIFEST_COLUMNS)
    assert "pe" in MANIFEST_COLUMNS and len(SCORED_LABELS) == 9
    assert set(frame.index) == set(truth["exam"])
    for study, exam in truth["exam"].items():
        row = frame.loc[study]
        assert row["patient_id"] == study and row["center"] == "rsna"
        for label in SCORED_LABELS:
            assert int(row[label]) == exam[label], (study, label)
        assert int(row["pe"]) == 1 - exam["negative_exam_for_pe"]
        folder = out / row["ct_series"]
        assert not Path(row["ct_series"]).is_absolute()
        assert folder.resolve() == (root / "train" / study / truth["series"][study]).resolve()
        assert len(list(folder.glob("*.dcm"))) == DEPTH
    assert frame.loc[uid("a", "study"), "pe"] == "1" and frame.loc[uid("b", "study"), "pe"] == "0"

    assert read_problems(out / "import_problems.csv") == []
    info = json.loads((out / "cohort.json").read_text())
    assert info["source"] == "rsna-pe" and info["grouping"] == "none" and info["group_unit"] == "study"
    assert any("no patient key" in w for w in info["warnings"])
    assert info["n_studies"] == 3 and info["n_slices"] == 3 * DEPTH and info["n_problems"] == 0


def test_slice_labels_are_keyed_by_sop_uid_not_by_csv_order(layout, tmp_path):
    root, truth = layout
    out1 = tmp_path / "one"
    import_rsna_pe(root, out1)
    labels = read(out1 / "slice_labels.csv")
    assert list(labels.columns) == ["sample_id", "sop_instance_uid", "pe_present_on_image"]
    assert len(labels) == 3 * DEPTH
    mapping = dict(zip(labels["sop_instance_uid"], labels["pe_present_on_image"].astype(int), strict=True))
    assert mapping == truth["slice"]
    # each SOP is filed under the study that holds its file
    for sample, sop in zip(labels["sample_id"], labels["sop_instance_uid"], strict=True):
        ds = pydicom.dcmread(
            root / "train" / sample / truth["series"][sample] / f"{sop}.dcm", stop_before_pixels=True
        )
        assert ds.StudyInstanceUID == sample

    # the same layout with train.csv in another order gives the same outputs, byte for byte
    other = tmp_path / "rsna2"
    shutil.copytree(root, other)
    frame = read(other / "train.csv")
    shuffled = frame.iloc[np.random.default_rng(99).permutation(len(frame))]
    assert not shuffled["SOPInstanceUID"].equals(frame["SOPInstanceUID"])
    shuffled.to_csv(other / "train.csv", index=False)
    out2 = tmp_path / "two"
    import_rsna_pe(other, out2, workers=2)
    assert (out1 / "slice_labels.csv").read_bytes() == (out2 / "slice_labels.csv").read_bytes()
    # the manifests differ only in the folder the layout lies in (../rsna/train vs ../rsna2/train)
    text1 = (out1 / "manifest.csv").read_text()
    assert text1.count("../rsna/train/") == 3
    assert text1.replace("../rsna/train/", "../rsna2/train/") == (out2 / "manifest.csv").read_text()


def test_missing_and_unlisted_dcm_files_are_problem_rows(layout, tmp_path):
    root, truth = layout
    study_a, study_b = uid("a", "study"), uid("b", "study")
    gone = root / "train" / study_a / truth["series"][study_a] / f"{uid('a', 'sop', 6)}.dcm"
    gone.unlink()
    unlisted = root / "train" / study_b / truth["series"][study_b] / "1.2.3.999.dcm"
    shutil.copy(root / "train" / study_a / truth["series"][study_a] / f"{uid('a', 'sop', 0)}.dcm", unlisted)
    out = tmp_path / "out"
    frame = read(import_rsna_pe(root, out)).set_index("sample_id")
    assert set(frame.index) == set(truth["exam"])  # both studies stay usable
    problems = {p.file: p for p in read_problems(out / "import_problems.csv")}
    gone, unlisted = (path.relative_to(root).as_posix() for path in (gone, unlisted))  # as the layout names them
    assert set(problems) == {gone, unlisted}
    assert problems[gone].sample_id == study_a
    line = csv_line(root, uid("a", "sop", 6))
    assert f"listed in train.csv (row {line}) but the file is missing" in problems[gone].reason
    assert "keeps its other 7 slice(s)" in problems[gone].reason
    assert problems[unlisted].sample_id == study_b
    assert "on disk but not listed in train.csv" in problems[unlisted].reason
    # the slice labels still cover every CSV row, the missing file's included
    assert len(read(out / "slice_labels.csv")) == 3 * DEPTH


def test_missing_study_folder_leaves_the_study_out(layout, tmp_path):
    root, _ = layout
    study_c = uid("c", "study")
    shutil.rmtree(root / "train" / study_c)
    (root / "train" / "1.2.3.4.5").mkdir()  # a study folder that train.csv does not list
    out = tmp_path / "out"
    frame = read(import_rsna_pe(root, out))
    assert study_c not in set(frame["sample_id"]) and len(frame) == 2
    reasons = {p.sample_id: p.reason for p in read_problems(out / "import_problems.csv")}
    assert (
        reasons[study_c]
        == f"study folder missing ({DEPTH} slice(s) listed in train.csv); the study is left out of the manifest"
    )
    assert "not listed in train.csv" in reasons["1.2.3.4.5"]
    info = json.loads((out / "cohort.json").read_text())
    assert info["n_studies"] == 2 and info["n_studies_in_csv"] == 3 and info["n_problems"] == 2


def test_inconsistent_exam_labels_name_the_rows_and_use_the_majority(layout, tmp_path):
    root, _ = layout
    study_a = uid("a", "study")
    frame = read(root / "train.csv")
    row = int(np.flatnonzero(frame["StudyInstanceUID"] == study_a)[3])
    frame.loc[row, "rightsided_pe"] = "0"  # 7 rows say 1, one says 0
    frame.loc[row, "central_pe"] = "1"
    frame.to_csv(root / "train.csv", index=False)
    out = tmp_path / "out"
    manifest = read(import_rsna_pe(root, out)).set_index("sample_id")
    assert manifest.loc[study_a, "rightsided_pe"] == "1" and manifest.loc[study_a, "central_pe"] == "0"
    (problem,) = read_problems(out / "import_problems.csv")
    assert problem.sample_id == study_a and problem.file == "train.csv"
    assert f"rows {row + 2} disagree" in problem.reason
    assert "exam labels differ between the 8 rows of the study (rightsided_pe, central_pe)" in problem.reason
    assert "used the majority value per label" in problem.reason


def test_exam_labels_that_contradict_slice_labels_are_reported_and_kept(layout, tmp_path):
    root, _ = layout
    study_a = uid("a", "study")
    frame = read(root / "train.csv")
    frame.loc[frame["StudyInstanceUID"] == study_a, "negative_exam_for_pe"] = "1"
    frame.to_csv(root / "train.csv", index=False)
    out = tmp_path / "out"
    manifest = read(import_rsna_pe(root, out)).set_index("sample_id")
    assert manifest.loc[study_a, "negative_exam_for_pe"] == "1" and manifest.loc[study_a, "pe"] == "0"
    (problem,) = read_problems(out / "import_problems.csv")
    assert problem.sample_id == study_a
    assert (
        problem.reason
        == "negative_exam_for_pe = 1 but 3 slice(s) have pe_present_on_image = 1; labels kept as given"
    )


def test_two_series_in_a_study_is_a_problem_and_the_fuller_series_is_used(layout, tmp_path):
    root, truth = layout
    study_b = uid("b", "study")
    second = uid("b", "series2")
    sops = [uid("b", "sop2", k) for k in range(3)]
    write_series(root / "train" / study_b / second, np.zeros((3, 16, 16)), study_uid=study_b, series_uid=second,
                 sop_uids=sops, seed_key="b2")  # fmt: skip
    frame = read(root / "train.csv")
    extra = frame.loc[frame["StudyInstanceUID"] == study_b].head(3).copy()
    extra["SeriesInstanceUID"], extra["SOPInstanceUID"] = second, sops
    pd.concat([extra, frame]).to_csv(root / "train.csv", index=False)
    out = tmp_path / "out"
    manifest = read(import_rsna_pe(root, out)).set_index("sample_id")
    assert manifest.loc[study_b, "ct_series"].endswith(f"/{study_b}/{truth['series'][study_b]}")
    (problem,) = read_problems(out / "import_problems.csv")
    assert problem.sample_id == study_b
    assert problem.reason.startswith("the study has 2 series")
    assert f"the manifest uses series {truth['series'][study_b]}" in problem.reason
    assert len(read(out / "slice_labels.csv")) == 3 * DEPTH + 3


def test_missing_column_is_an_error_listing_missing_and_found(layout, tmp_path):
    root, _ = layout
    frame = read(root / "train.csv").drop(columns=["indeterminate", "SOPInstanceUID"])
    frame.to_csv(root / "train.csv", index=False)
    out = tmp_path / "out"
    with pytest.raises(
        ImporterError, match=r"column\(s\) missing: SOPInstanceUID, indeterminate; columns found: "
    ) as err:
        import_rsna_pe(root, out)
    assert "StudyInstanceUID" in str(err.value) and str(root / "train.csv") in str(err.value)
    assert not (out / "manifest.csv").exists()


def test_bad_label_value_is_an_error_naming_the_row(layout, tmp_path):
    root, _ = layout
    frame = read(root / "train.csv")
    frame.loc[4, "pe_present_on_image"] = "yes"
    frame.to_csv(root / "train.csv", index=False)
    out = tmp_path / "out"
    with pytest.raises(ImporterError, match=r"'pe_present_on_image' must hold 0 or 1, found 'yes' in row 6"):
        import_rsna_pe(root, out)
    assert not out.exists()


def test_no_usable_study_raises_and_writes_no_manifest(layout, tmp_path):
    root, _ = layout
    shutil.rmtree(root / "train")
    (root / "train").mkdir()
    out = tmp_path / "out"
    with pytest.raises(ImporterError, match="none of the 3 studies"):
        import_rsna_pe(root, out)
    assert not (out / "manifest.csv").exists() and not (out / "cohort.json").exists()
    assert len(read_problems(out / "import_problems.csv")) == 3  # why, study by study
    assert [p.name for p in out.iterdir()] == ["import_problems.csv"]  # no partial files


def test_registry_accepts_the_folder_or_train_csv(layout, tmp_path):
    root, _ = layout
    assert get_importer("rsna-pe").func is import_rsna_pe
    a = run_importer("rsna-pe", root, tmp_path / "a", workers=3)
    b = run_importer("rsna-pe", root / "train.csv", tmp_path / "b")
    assert read(a)["ct_series"].tolist() == read(b)["ct_series"].tolist()
