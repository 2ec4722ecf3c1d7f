"""The thyroid seed's folders (<modality>/{train,valid,itest,etest}/<id>.png + GB18030 labels CSV)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from medflow.cohort.importers import ImporterError, run_importer
from medflow.cohort.importers.clnm_folders import import_clnm_folders, normalise_id
from medflow.cohort.manifest import load_manifest
from medflow.config import check_config

ID, LABEL = "病历号", "group1"


def write_png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (12, 12), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def write_tree(root: Path, images: dict[str, dict[str, list[str]]], labels: list[tuple[str, object]],
               clinical: list[tuple[str, float]] | None = None) -> Path:
    """images: modality → split folder → file stems; labels: (id as written, group1)."""
    for modality, folders in images.items():
        for folder, stems in folders.items():
            for i, stem in enumerate(stems):
                write_png(root / modality / folder / f"{stem}.png", i)
    table = pd.DataFrame({ID: [i for i, _ in labels], "性别": ["男"] * len(labels), LABEL: [g for _, g in labels]})
    table.to_csv(root / "3y.csv", index=False, encoding="gb18030")
    if clinical is not None:
        pd.DataFrame({ID: [i for i, _ in clinical], "年龄": [a for _, a in clinical]}).to_csv(
            root / "clinical_raw.csv", index=False, encoding="gb18030"
        )
    return root


def study(path: Path, **cohort) -> dict:
    config = {"studies": {"clnm": {
        "cohort": {"source": "clnm-folders", "path": str(path), **cohort},
        "labels": ["lnm"],
        "modalities": {"tumour_us": {"kind": "image", "size": [12, 12]}, "fat_ct": {"kind": "image", "size": [12, 12]},
                       "clinical": {"kind": "table", "file": "clinical.csv"}},
        "split": {"fractions": {"train": 0.7, "val": 0.15, "test": 0.15}, "external_centers": ["external"]},
    }}}
    return check_config(config)["studies"]["clnm"]


def full_tree(root: Path) -> Path:
    """7 patients with images; 0007 lacks fat_ct; 0042 has no labels row; label 9 has no image."""
    images = {
        "tumour_us": {"train": ["0001", "0002", "0003"], "valid": ["0004"], "itest": ["0005"], "etest": ["0006", "0007"]},
        "fat_ct": {"train": ["1", "2", "3"], "valid": ["4"], "itest": ["5"], "etest": ["6"], "itest_extra": []},
    }
    write_tree(root, images, [("1", 1), ("2.0", 0), ("003", 1), ("4", 0), (" 5 ", 1), ("6", 0), ("7", 1), ("9", 0)],
               clinical=[("1", 50.0), ("2", 61.0), ("3", 44.0), ("4", 38.0), ("5", 70.0), ("6", 29.0), ("8", 55.0)])
    write_png(root / "fat_ct" / "valid" / "0042.png")
    return root


def test_normalise_id():
    assert [normalise_id(v) for v in ["0012", "12.0", " 12 ", 12, 12.0, "0", "000", "A01", "12.5"]] == [
        "12", "12", "12", "12", "12", "0", "0", "A01", "12.5"
    ]


def test_split_folders_centres_labels_and_mismatches(tmp_path):
    root = full_tree(tmp_path / "raw")
    out = tmp_path / "cohort"
    manifest_path = import_clnm_folders(root, out, clinical="clinical_raw.csv")
    frame = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["sample_id", "patient_id", "center", "lnm", "fat_ct", "tumour_us", "split"]
    assert frame["sample_id"].tolist() == ["1", "2", "3", "4", "5", "6", "7"]
    assert frame["split"].tolist() == ["train", "train", "train", "val", "test", "external", "external"]
    assert frame["center"].tolist() == ["internal"] * 5 + ["external"] * 2
    assert frame["lnm"].tolist() == ["1", "0", "1", "0", "1", "0", "1"]
    row7 = frame.set_index("sample_id").loc["7"]
    assert row7["fat_ct"] == "" and row7["tumour_us"] == "../raw/tumour_us/etest/0007.png"  # kept, cell empty
    assert (out / frame.set_index("sample_id").loc["1", "fat_ct"]).is_file()

    info = json.loads((out / "cohort.json").read_text())
    assert info["grouping"] == "patient" and info["modalities"] == ["fat_ct", "tumour_us"]
    counts = {k: info[k] for k in ("n_patients_with_images", "n_label_rows", "n_patients", "n_missing_images",
                                   "n_without_labels", "n_labels_without_images")}
    assert counts == {"n_patients_with_images": 8, "n_label_rows": 8, "n_patients": 7, "n_missing_images": 1,
                      "n_without_labels": 1, "n_labels_without_images": 1}
    assert info["split_counts"] == {"external": 2, "test": 1, "train": 3, "val": 1}
    assert info["images_per_modality"] == {"fat_ct": 7, "tumour_us": 7}
    assert any("42" in w and "no labels" in w for w in info["warnings"])
    assert any("without any image: 9" in w for w in info["warnings"])

    problems = pd.read_csv(out / "import_problems.csv", dtype=str, keep_default_na=False)
    by_id = problems.groupby("sample_id")["reason"].apply(" | ".join)
    assert "no fat_ct image" in by_id["7"] and "kept with fat_ct empty" in by_id["7"]
    assert "no row in the labels CSV" in by_id["42"]
    assert "no image in any modality" in by_id["9"]
    assert "not in the manifest" in by_id["8"] and "no clinical row" in by_id["7"]
    assert not problems["file"].str.contains(str(tmp_path)).any()  # relative to the cohort path

    clinical = pd.read_csv(out / "clinical.csv", dtype=str)
    assert list(clinical.columns) == ["sample_id", "年龄"] and clinical["sample_id"].tolist()[:2] == ["1", "2"]

    cohort = load_manifest(manifest_path, study(root), missing_files="error")
    assert cohort.manifest["split"].tolist() == frame["split"].tolist()


def test_the_workflow_options_from_the_config(tmp_path):
    """The cohort block's keys reach the importer as they stand in the YAML (a mapping, a list)."""
    root = tmp_path / "raw"
    write_tree(root, {"us": {"train": ["01", "02"], "etest": ["03"]}, "ct": {"train": ["1", "2"], "etest": ["3"]}},
               [])
    pd.DataFrame({"ID": ["1", "2", "3"], "y": ["1", "0", "1"], "z": [0, 0, 1]}).to_csv(root / "labels.csv", index=False)
    out = tmp_path / "cohort"
    run_importer("clnm-folders", root, out, labels="labels.csv", encoding="utf-8", id_column="ID",
                 label_columns={"lnm": "y", "other": "z"}, modalities=["us"], workers=2)
    frame = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(frame.columns) == ["sample_id", "patient_id", "center", "lnm", "other", "us", "split"]
    assert frame["other"].tolist() == ["0", "0", "1"]


def test_bad_labels_conflicting_splits_and_wrong_encoding(tmp_path):
    root = tmp_path / "raw"
    write_tree(root, {"us": {"train": ["1", "2"], "valid": ["3"]}, "ct": {"train": ["1", "3"], "valid": ["2"]}},
               [("1", 1), ("2", 0), ("3", "yes")])
    out = tmp_path / "cohort"
    import_clnm_folders(root, out)
    frame = pd.read_csv(out / "manifest.csv", dtype=str)
    assert frame["sample_id"].tolist() == ["1", "2"]
    assert frame["split"].tolist() == ["train", "val"]  # the first modality (ct, sorted) decides
    info = json.loads((out / "cohort.json").read_text())
    assert info["n_bad_labels"] == 1 and info["n_split_conflicts"] == 2
    problems = pd.read_csv(out / "import_problems.csv", dtype=str)
    assert problems["reason"].str.contains("'yes' is not 0 or 1").any()
    with pytest.raises(ImporterError, match="encoding 'utf-8'"):
        import_clnm_folders(root, tmp_path / "c2", encoding="utf-8")
    with pytest.raises(ImporterError, match="id column 'ID' not found"):
        import_clnm_folders(root, tmp_path / "c3", id_column="ID")
    with pytest.raises(ImporterError, match="modality folder"):
        import_clnm_folders(root, tmp_path / "c4", modalities="us,mri")
