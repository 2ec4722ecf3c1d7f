"""The brain-mets seed's metadata CSV (PiCare MetID, image_path, mask_path, Failure-binary) + test_id.npy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medflow.cohort.importers import ImporterError, run_importer
from medflow.cohort.importers.brainmets_meta import AXIS_ORDER, NO_PATIENT_WARNING, import_brainmets_meta
from medflow.cohort.manifest import load_manifest
from medflow.config import check_config
from medflow.io.images import read_volume
from medflow.split import make_splits

SHAPE = (4, 6, 5)  # z, x, y


def write_lesions(root: Path, rows: list[dict], test_ids=None) -> Path:
    """Volumes under root/vol/, the CSV (relative paths, as the seed writes them) and test_id.npy."""
    (root / "vol").mkdir(parents=True, exist_ok=True)
    table = []
    for i, row in enumerate(rows):
        lesion = row["id"]
        shape = row.get("shape", SHAPE)
        image, mask = f"vol/{lesion}_img.npy", f"vol/{lesion}_mask.npy"
        if row.get("image", True):
            vol = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + i
            np.save(root / image, vol)
        np.save(root / mask, np.zeros(row.get("mask_shape", shape), dtype=np.uint8))
        table.append({"PiCare MetID": lesion, "Patient": row.get("patient", ""), "image_path": image,
                      "mask_path": mask, "Failure-binary": row.get("y", 0)})
    pd.DataFrame(table).to_csv(root / "mask_vol_all.csv", index=False)
    if test_ids is not None:
        np.save(root / "test_id.npy", np.asarray(test_ids))
    return root / "mask_vol_all.csv"


def study(path: Path, **cohort) -> dict:
    config = {"studies": {"brainmets": {
        "cohort": {"source": "brainmets-meta", "path": str(path), **cohort},
        "labels": ["local_failure"],
        "modalities": {"mri": {"kind": "volume", "size": [4, 8, 8], "mask": "lesion_mask"}},
        "split": {"seed": 42, "fractions": {"train": 0.8, "val": 0.0, "test": 0.2}, "stratify": "local_failure", "folds": 2},
    }}}
    return check_config(config)["studies"]["brainmets"]


LESIONS = [
    {"id": "BM01_1", "patient": "BM01", "y": 1},
    {"id": "BM01_2", "patient": "BM01", "y": 0},
    {"id": "BM02_1", "patient": "BM02", "y": 1},
    {"id": "BM03_1", "patient": "BM03", "y": 0},
    {"id": "BM03_2", "patient": "BM03", "y": 1},
    {"id": "BM04_1", "patient": "BM04", "y": 0},
    {"id": "BM05_1", "patient": "BM05", "y": 1},
    {"id": "BM06_1", "patient": "BM06", "y": 0},
    {"id": "BM07_1", "patient": "BM07", "y": 1, "image": False},  # image file missing
    {"id": "BM08_1", "patient": "BM08", "y": 0, "mask_shape": (4, 6, 6)},  # mask does not fit
    {"id": "BM09_1", "patient": "BM09", "y": "x"},  # bad label
]
TEST_IDS = ["BM02_1", "BM03_1", "BM99_1"]  # BM99_1: not in the CSV; BM03_2 follows its patient


def test_lesions_without_patient_key_are_their_own_group(tmp_path):
    csv = write_lesions(tmp_path / "raw", LESIONS, TEST_IDS)
    out = tmp_path / "cohort"
    manifest_path = import_brainmets_meta(csv, out)
    frame = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["sample_id", "patient_id", "center", "local_failure", "mri", "lesion_mask", "split"]
    assert frame["sample_id"].tolist() == ["BM01_1", "BM01_2", "BM02_1", "BM03_1", "BM03_2", "BM04_1", "BM05_1", "BM06_1"]
    assert (frame["patient_id"] == frame["sample_id"]).all()
    assert frame.set_index("sample_id")["split"].to_dict() == {
        "BM01_1": "train", "BM01_2": "train", "BM02_1": "test", "BM03_1": "test", "BM03_2": "train",
        "BM04_1": "train", "BM05_1": "train", "BM06_1": "train"}
    assert frame["mri"].iloc[0] == "../raw/vol/BM01_1_img.npy"

    info = json.loads((out / "cohort.json").read_text())
    assert info["grouping"] == "none" and NO_PATIENT_WARNING in info["warnings"]
    assert info["axis_order"] == AXIS_ORDER
    assert {k: info[k] for k in ("n_csv_rows", "n_lesions", "n_patients", "n_test_ids", "n_test_ids_unknown")} == {
        "n_csv_rows": 11, "n_lesions": 8, "n_patients": 8, "n_test_ids": 3, "n_test_ids_unknown": 1}
    problems = pd.read_csv(out / "import_problems.csv", dtype=str, keep_default_na=False).set_index("sample_id")
    assert "image file not found" in problems.loc["BM07_1", "reason"]
    assert "differs from the image's (4, 6, 5)" in problems.loc["BM08_1", "reason"]
    assert "'x' is not 0 or 1" in problems.loc["BM09_1", "reason"]
    assert "not a lesion of the metadata CSV" in problems.loc["BM99_1", "reason"]
    assert not problems["file"].str.contains(str(tmp_path)).any()

    cohort = load_manifest(manifest_path, study(csv), missing_files="error")
    assert cohort.grouping == "none"
    # z, x, y as stored is medflow's D×H×W: no transposition
    vol = read_volume(cohort.resolve(cohort.manifest["mri"].iloc[0]))
    assert vol.pixels.shape == SHAPE and vol.pixels[1, 2, 3] == np.load(csv.parent / "vol/BM01_1_img.npy")[1, 2, 3]


@pytest.mark.parametrize("patient_from", ["Patient", r"^(BM\d+)_"])
def test_patient_from_groups_lesions_and_keeps_a_patient_in_one_split(tmp_path, patient_from):
    csv = write_lesions(tmp_path / "raw", LESIONS, TEST_IDS)
    out = tmp_path / "cohort"
    run_importer("brainmets-meta", csv, out, patient_from=patient_from, test_ids="test_id.npy", workers=2)
    frame = pd.read_csv(out / "manifest.csv", dtype=str)
    assert frame.set_index("sample_id")["patient_id"]["BM01_2"] == "BM01"
    split = frame.set_index("sample_id")["split"]
    assert split["BM03_2"] == "test"  # moved with its patient's test lesion
    info = json.loads((out / "cohort.json").read_text())
    assert info["grouping"] == "patient" and info["n_patients"] == 6 and info["n_moved_to_test"] == 1
    assert info["split_counts"] == {"test": 3, "train": 5}

    load_manifest(out / "manifest.csv", study(csv, patient_from=patient_from), missing_files="error")


def test_fixed_splits_get_the_studys_folds(tmp_path):
    csv = write_lesions(tmp_path / "raw", LESIONS, TEST_IDS)
    out = tmp_path / "cohort"
    import_brainmets_meta(csv, out, patient_from="Patient")
    split = pd.read_csv(out / "manifest.csv", dtype=str).set_index("sample_id")["split"]
    cohort = load_manifest(out / "manifest.csv", study(csv, patient_from="Patient"), missing_files="error")
    splits = make_splits(cohort.manifest, label="local_failure", fractions={"train": 0.8, "val": 0.0, "test": 0.2},
                         folds=2)
    assert splits.set_index("sample_id")["split"].to_dict() == split.to_dict()  # fixed: fractions move nobody
    assert (splits.loc[splits["split"] == "train", "fold"] >= 0).all()
    assert splits.groupby("patient_id")["fold"].nunique().max() == 1


def test_numeric_ids_and_errors(tmp_path):
    csv = write_lesions(tmp_path / "raw", [{"id": "0012", "y": 1}, {"id": "13", "y": 0}, {"id": "14", "y": 1}],
                        np.array([12.0]))  # ids saved as floats: matched after normalisation
    out = tmp_path / "cohort"
    import_brainmets_meta(csv, out)
    frame = pd.read_csv(out / "manifest.csv", dtype=str)
    assert frame.set_index("sample_id")["split"].to_dict() == {"12": "test", "13": "train", "14": "train"}
    with pytest.raises(ImporterError, match="exactly one group"):
        import_brainmets_meta(csv, tmp_path / "c2", patient_from=r"(\d)(\d)")
    with pytest.raises(ImporterError, match="test ids file not found"):
        import_brainmets_meta(csv, tmp_path / "c3", test_ids="nope.npy")
    np.save(csv.parent / "obj.npy", np.array(["12", 3], dtype=object), allow_pickle=True)
    with pytest.raises(ImporterError, match="without unpickling"):
        import_brainmets_meta(csv, tmp_path / "c4", test_ids="obj.npy")
    pd.DataFrame({"PiCare MetID": ["1"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ImporterError, match="'image_path', 'mask_path', 'Failure-binary' not found"):
        import_brainmets_meta(tmp_path / "bad.csv", tmp_path / "c5")
