"""NIfTI/NRRD/MetaImage volumes and masks (issue 14, item 3): one array orientation for every source,
spacing kept, image/mask geometry checked, unreadable files as problem rows without paths."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pydicom
import pytest

from medflow.ingest import ingest_modality
from medflow.io import images, volume_files
from medflow.io.dicom_write import write_series
from medflow.problems import InputProblem, read_problems

sitk = pytest.importorskip("SimpleITK")

SPACING = (3.0, 0.8, 0.7)  # (slice, row, column) mm
ORIGIN = (-100.0, -90.0, -50.0)  # LPS mm


def _volume(seed=0, shape=(5, 6, 7)):
    return np.round(np.random.default_rng(seed).uniform(-1000, 2000, shape)).astype(np.float32)


def _write(path, arr, spacing=SPACING, origin=ORIGIN, direction=None):
    """Write a D×H×W array with medflow geometry through SimpleITK (index i = column, k = slice)."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    img.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:  # rows = directions of array axes (slice, row, column) → ITK columns (i, j, k)
        img.SetDirection(tuple(np.asarray(direction, dtype=float)[::-1].T.ravel()))
    sitk.WriteImage(img, str(path))
    return path


def test_nifti_equals_its_dicom_series(tmp_path):
    vol = _volume()
    write_series(tmp_path / "series", vol, modality="CT", spacing=SPACING, origin=ORIGIN)
    dicom = images.read_volume(tmp_path / "series")
    _write(tmp_path / "v.nii.gz", dicom.pixels, dicom.spacing, dicom.origin, dicom.direction)
    nifti = images.read_volume(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(nifti.pixels, dicom.pixels)
    np.testing.assert_array_equal(dicom.pixels, vol)
    assert nifti.pixels.dtype == np.float32 and nifti.pixels.shape == (5, 6, 7)
    np.testing.assert_allclose(nifti.spacing, dicom.spacing, rtol=1e-6)
    np.testing.assert_allclose(dicom.spacing, SPACING)
    np.testing.assert_allclose(nifti.origin, dicom.origin, atol=1e-4)
    np.testing.assert_allclose(nifti.direction, dicom.direction, atol=1e-6)
    assert volume_files.mask_mismatch(dicom.geometry, nifti.geometry) == []


@pytest.mark.parametrize("name", ["v.nii", "v.nrrd", "v.mha", "v.mhd"])
def test_every_format_reads_the_same(tmp_path, name):
    vol = _volume(1)
    _write(tmp_path / name, vol)
    got = images.read_volume(tmp_path / name)
    np.testing.assert_array_equal(got.pixels, vol)
    np.testing.assert_allclose(got.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(got.origin, ORIGIN, atol=1e-4)


def test_stored_in_another_orientation_gives_the_same_array(tmp_path):
    """RAS voxel order (x and y flipped, as FSL writes) and sagittal storage (slice axis = L-R) both
    come back as the axial LPS array."""
    vol = _volume(2)
    _write(tmp_path / "lps.nii.gz", vol)
    _, h, w = vol.shape
    # RAS storage: row and column axes point right and anterior; voxel [0,0,0] is the opposite corner
    ras_origin = (ORIGIN[0] + (w - 1) * SPACING[2], ORIGIN[1] + (h - 1) * SPACING[1], ORIGIN[2])
    _write(tmp_path / "ras.nii.gz", vol[:, ::-1, ::-1].copy(), SPACING, ras_origin,
           ((0, 0, 1), (0, -1, 0), (-1, 0, 0)))
    # sagittal storage: array axes (L, S, P) = transpose of (S, P, L)
    sag = np.ascontiguousarray(np.transpose(vol, (2, 0, 1)))
    _write(tmp_path / "sag.nrrd", sag, (SPACING[2], SPACING[0], SPACING[1]), ORIGIN, ((1, 0, 0), (0, 0, 1), (0, 1, 0)))
    ref = images.read_volume(tmp_path / "lps.nii.gz")
    for name in ("ras.nii.gz", "sag.nrrd"):
        got = images.read_volume(tmp_path / name)
        np.testing.assert_array_equal(got.pixels, ref.pixels)
        np.testing.assert_allclose(got.spacing, SPACING, rtol=1e-6)
        np.testing.assert_allclose(got.origin, ref.origin, atol=1e-3)
        np.testing.assert_allclose(got.direction, np.eye(3)[::-1], atol=1e-6)


def test_sagittal_dicom_series_and_its_nifti_give_the_same_axial_array(tmp_path):
    """A DICOM series is brought to the same orientation: sagittal slices (normal = -x, rows run
    down, columns run posterior) come back as the axial array the NIfTI of its voxels gives."""
    vol = _volume(7)
    paths = write_series(tmp_path / "sag", vol, modality="CT", spacing=(2.0, 0.7, 0.7))
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [10.0 - 2.0 * k, 0.0, 0.0]
        ds.save_as(path)
    dicom = images.read_volume(tmp_path / "sag")
    as_stored = ((-1, 0, 0), (0, 0, -1), (0, 1, 0))  # slice, row, column axes of the series
    _write(tmp_path / "sag.nii.gz", vol, (2.0, 0.7, 0.7), (10.0, 0.0, 0.0), as_stored)
    nifti = images.read_volume(tmp_path / "sag.nii.gz")
    assert dicom.pixels.shape == (6, 7, 5)  # superior, posterior, left
    np.testing.assert_array_equal(dicom.pixels, np.transpose(vol[::-1, ::-1], (1, 2, 0)))
    np.testing.assert_array_equal(nifti.pixels, dicom.pixels)
    np.testing.assert_allclose(nifti.spacing, dicom.spacing, rtol=1e-6)
    np.testing.assert_allclose(dicom.direction, np.eye(3)[::-1], atol=1e-9)
    assert volume_files.mask_mismatch(dicom.geometry, nifti.geometry) == []


def test_to_convention_leaves_an_axial_series_untouched():
    arr = _volume(3)
    direction = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))
    out = volume_files.to_convention(arr, SPACING, ORIGIN, direction)
    assert out[0] is arr and out[1:] == (SPACING, ORIGIN, direction)


def test_mask_file_read_and_labels_checked(tmp_path):
    mask = np.zeros((5, 6, 7), np.uint8)
    mask[1:3, 2:4, 2:5] = 2
    _write(tmp_path / "m.nii.gz", mask)
    got = images.read_mask_volume(tmp_path / "m.nii.gz")
    assert got.pixels.dtype == np.uint8
    np.testing.assert_array_equal(got.pixels, mask)
    _write(tmp_path / "bad.nrrd", mask.astype(np.float32) + 0.5)
    with pytest.raises(InputProblem, match="integer labels"):
        images.read_mask(tmp_path / "bad.nrrd")


def _ingest(tmp_path, images_col, masks_col):
    ids = [f"s{i}" for i in range(len(images_col))]
    man = pd.DataFrame({"sample_id": ids, "patient_id": ids, "center": "A", "mri": images_col, "seg": masks_col})
    spec = {"kind": "volume", "size": [4, 6, 6], "mask": "seg"}
    out, probs = tmp_path / "out" / "mri.h5", tmp_path / "out" / "mri.problems.csv"
    summary = ingest_modality(man, tmp_path, "mri", spec, out, probs, progress=False)
    return summary, out, {p.sample_id: p for p in read_problems(probs)}


def test_ingest_checks_mask_geometry_and_reports_bad_files(tmp_path):
    vol, mask = _volume(4), (_volume(5) > 500).astype(np.uint8)
    _write(tmp_path / "v.nii.gz", vol)
    _write(tmp_path / "m_ok.nii.gz", mask)
    _write(tmp_path / "m_spacing.nii.gz", mask, spacing=(2.0, 0.8, 0.7))
    _write(tmp_path / "m_origin.nrrd", mask, origin=(0.0, 0.0, 0.0))
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))  # turned by 10° about the slice axis
    _write(tmp_path / "m_turned.nii.gz", mask, direction=((0, 0, 1), (s, c, 0), (c, -s, 0)))
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not an image at all" * 10)
    (tmp_path / "half.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\n"
                                       "ElementDataFile = half.raw\n")
    summary, out, problems = _ingest(
        tmp_path,
        ["v.nii.gz", "v.nii.gz", "v.nii.gz", "v.nii.gz", "corrupt.nii.gz", "half.mhd"],
        ["m_ok.nii.gz", "m_spacing.nii.gz", "m_origin.nrrd", "m_turned.nii.gz", "m_ok.nii.gz", "m_ok.nii.gz"],
    )
    assert summary.n_ok == 1 and sorted(problems) == ["s1", "s2", "s3", "s4", "s5"]
    assert "mask spacing (2.0, 0.8, 0.7) differs from the image's (3.0, 0.8, 0.7)" in problems["s1"].reason
    assert "mask origin (0.0, 0.0, 0.0) differs from the image's (-100.0, -90.0, -50.0)" in problems["s2"].reason
    assert "mask direction" in problems["s3"].reason and "origin" not in problems["s3"].reason
    assert "cannot be read as a NIfTI image" in problems["s4"].reason
    assert "data file (named in it) is missing" in problems["s5"].reason
    for p in problems.values():
        assert str(tmp_path) not in p.reason and "/" not in p.reason.replace("D×H×W", "")
    with h5py.File(out) as f:
        assert [s.decode() for s in f["sample_id"][:]] == ["s0"]
        np.testing.assert_allclose(f["spacing"][0], [3.0 * 5 / 4, 0.8, 0.7 * 7 / 6], rtol=1e-6)
        np.testing.assert_array_equal(f["masks"][0], images.resize_nearest(mask, (4, 6, 6)))


def test_detached_data_file_is_part_of_the_reuse_fingerprint(tmp_path):
    """A rewritten .raw behind an unchanged .mhd header is decoded again, never reused stale."""
    import os

    _write(tmp_path / "v.mhd", _volume(6))
    _write(tmp_path / "w.nii.gz", _volume(7))
    assert [p.name for p in volume_files.companion_files(tmp_path / "v.mhd")] == ["v.raw"]
    assert volume_files.companion_files(tmp_path / "w.nii.gz") == []
    man = pd.DataFrame({"sample_id": ["v", "w"], "patient_id": ["v", "w"], "center": "A", "mri": ["v.mhd", "w.nii.gz"]})
    spec = {"kind": "volume", "size": [4, 6, 6]}
    out, probs = tmp_path / "out" / "mri.h5", tmp_path / "out" / "mri.problems.csv"
    ingest_modality(man, tmp_path, "mri", spec, out, probs, progress=False, reuse_previous=True)
    raw = tmp_path / "v.raw"
    stat = raw.stat()
    raw.write_bytes(_volume(8).astype(np.float32).tobytes())
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    out.unlink()
    summary = ingest_modality(man, tmp_path, "mri", spec, out, probs, progress=False, reuse_previous=True)
    assert summary.n_reused == 1 and summary.n_ok == 2
    with h5py.File(out) as f:
        np.testing.assert_allclose(f["images"][0], images.resize3d_linear(_volume(8), (4, 6, 6)), rtol=1e-6)
