"""The LUNA16-derived patch-file importer (all_patches.hdf5 → manifest.csv + cohort.json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from medflow.cohort.importers import ImporterError, get_importer, run_importer
from medflow.cohort.importers.luna import NO_IDS_WARNING, import_luna_patches


def write_patch_file(path: Path, labels, *, images=None, size: int = 8, label_shape: str = "column") -> Path:
    """A patch file in the public layout: ct_slices (N, size, size) int16 HU, slice_class (N, 1) float."""
    labels = np.asarray(labels, dtype=np.float64)
    n = len(labels)
    if images is None:
        rng = np.random.default_rng(0)
        images = rng.integers(-1000, 400, size=(n, size, size)).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("ct_slices", data=images)
        f.create_dataset("slice_class", data=labels[:, None] if label_shape == "column" else labels)
    return path


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_manifest_rows_follow_the_file_and_point_into_it(tmp_path):
    labels = [1.0] * 3 + [0.0] * 9  # sorted by class, as the real file
    patch_file = write_patch_file(tmp_path / "all_patches.hdf5", labels)
    manifest_path = import_luna_patches(patch_file, tmp_path)
    assert manifest_path == tmp_path / "manifest.csv"
    frame = read_manifest(manifest_path)
    assert list(frame.columns) == ["sample_id", "patient_id", "center", "malignant", "ct_patch"]
    assert frame["sample_id"].tolist() == [f"patch{i:02d}" for i in range(12)]  # width of N = 12
    assert (frame["patient_id"] == frame["sample_id"]).all()
    assert (frame["center"] == "luna16").all()
    assert frame["malignant"].tolist() == ["1"] * 3 + ["0"] * 9  # ints, not 1.0
    assert frame["ct_patch"].tolist() == [f"all_patches.hdf5#{i}" for i in range(12)]

    info = json.loads((tmp_path / "cohort.json").read_text())
    assert info["source"] == "luna-patches" and info["grouping"] == "none"
    assert NO_IDS_WARNING in info["warnings"]
    assert info["n_samples"] == 12 and info["class_counts"] == {"0": 9, "1": 3}
    assert info["sorted_by_class"] is True
    assert info["source_sha256"] == hashlib.sha256(patch_file.read_bytes()).hexdigest()
    assert Path(info["source_file"]) == patch_file.resolve()


def test_refs_are_relative_to_out_dir_and_resolve_to_the_right_patch(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 25).astype(float)
    labels[:2] = [0, 1]  # not sorted by class
    images = rng.integers(-1000, 400, size=(25, 8, 8)).astype(np.int16)
    patch_file = write_patch_file(
        tmp_path / "raw" / "all_patches.hdf5", labels, images=images, label_shape="flat"
    )
    out = tmp_path / "cohorts" / "lnmc"
    frame = read_manifest(import_luna_patches(patch_file, out))
    assert frame["sample_id"].iloc[7] == "patch07"
    with h5py.File(patch_file, "r") as f:
        for _, row in frame.sample(8, random_state=0).iterrows():
            file_part, index = row["ct_patch"].split("#")
            assert file_part == "../../raw/all_patches.hdf5"
            assert (out / file_part).resolve() == patch_file.resolve()
            np.testing.assert_array_equal(f["ct_slices"][int(index)], images[int(index)])
            assert int(row["malignant"]) == labels[int(index)]
    assert json.loads((out / "cohort.json").read_text())["sorted_by_class"] is False


def test_only_labels_and_shapes_are_read(tmp_path, monkeypatch):
    patch_file = write_patch_file(tmp_path / "all_patches.hdf5", [1, 0, 0, 1])
    reads = []
    original = h5py.Dataset.__getitem__

    def spy(self, args, *rest, **kw):
        reads.append(self.name)
        return original(self, args, *rest, **kw)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    import_luna_patches(patch_file, tmp_path / "out")
    assert reads and "/ct_slices" not in reads


def _bad(path: Path, case: str) -> Path:
    with h5py.File(path, "w") as f:
        if case == "missing":
            f.create_dataset("images", data=np.zeros((3, 8, 8), np.int16))
            f.create_dataset("slice_class", data=np.zeros((3, 1)))
        elif case == "mismatch":
            f.create_dataset("ct_slices", data=np.zeros((5, 8, 8), np.int16))
            f.create_dataset("slice_class", data=np.zeros((4, 1)))
        elif case == "bad_label":
            f.create_dataset("ct_slices", data=np.zeros((6, 8, 8), np.int16))
            f.create_dataset("slice_class", data=np.array([[1.0], [0.0], [1.0], [0.0], [2.0], [0.0]]))
        elif case == "nan_label":
            f.create_dataset("ct_slices", data=np.zeros((3, 8, 8), np.int16))
            f.create_dataset("slice_class", data=np.array([[0.0], [np.nan], [1.0]]))
        elif case == "empty":
            f.create_dataset("ct_slices", data=np.zeros((0, 8, 8), np.int16))
            f.create_dataset("slice_class", data=np.zeros((0, 1)))
        elif case == "ndim":
            f.create_dataset("ct_slices", data=np.zeros((3, 8), np.int16))
            f.create_dataset("slice_class", data=np.zeros((3, 1)))
        elif case == "label_shape":
            f.create_dataset("ct_slices", data=np.zeros((3, 8, 8), np.int16))
            f.create_dataset("slice_class", data=np.zeros((3, 2)))
    return path


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("missing", r"dataset 'ct_slices' .* is missing; keys found: images, slice_class"),
        ("mismatch", r"'ct_slices' holds 5 patches .* but 'slice_class' holds 4 labels"),
        ("bad_label", r"'slice_class' must hold 0 or 1 .*row 4 holds 2\.0 \(1 bad row"),
        ("nan_label", r"row 1 holds nan"),
        ("empty", r"are empty \(N = 0\)"),
        ("ndim", r"'ct_slices' has shape \(3, 8\), expected \(N, H, W\)"),
        ("label_shape", r"'slice_class' has shape \(3, 2\), expected \(N, 1\) or \(N,\)"),
    ],
)
def test_bad_files_give_a_specific_error_and_write_nothing(tmp_path, case, pattern):
    (tmp_path / "in").mkdir()
    patch_file = _bad(tmp_path / "in" / "all_patches.hdf5", case)
    out = tmp_path / "out"
    with pytest.raises(ImporterError, match=pattern) as err:
        import_luna_patches(patch_file, out)
    assert str(patch_file) in str(err.value)  # the message names the file
    assert not out.exists() or list(out.iterdir()) == []  # no manifest, no partial file


def test_a_failed_import_leaves_a_previous_manifest_untouched(tmp_path):
    good = write_patch_file(tmp_path / "good.hdf5", [1, 0, 1])
    out = tmp_path / "out"
    before = import_luna_patches(good, out).read_bytes()
    with pytest.raises(ImporterError):
        import_luna_patches(_bad(tmp_path / "bad.hdf5", "bad_label"), out)
    assert (out / "manifest.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["cohort.json", "manifest.csv"]


def test_missing_or_non_hdf5_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="patch file not found"):
        import_luna_patches(tmp_path / "nope.hdf5", tmp_path / "out")
    text = tmp_path / "all_patches.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(ImporterError, match="cannot be opened as HDF5"):
        import_luna_patches(text, tmp_path / "out")


def test_registry_and_run_importer_drop_options_the_importer_does_not_take(tmp_path):
    assert get_importer("luna-patches").func is import_luna_patches
    patch_file = write_patch_file(tmp_path / "all_patches.hdf5", [0, 1])
    manifest = run_importer("luna-patches", str(patch_file), str(tmp_path / "out"), workers=4)
    assert read_manifest(manifest)["malignant"].tolist() == ["0", "1"]
    with pytest.raises(ValueError, match="unknown importer 'nope'"):
        run_importer("nope", patch_file, tmp_path)
