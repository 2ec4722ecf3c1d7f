"""DICOM reading: modality LUT, MONOCHROME1, the lean reader, series sorting and every rejection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import RLELossless

from medflow.io import dicom_native, dicom_read, dicom_series
from medflow.io.dicom_write import deterministic_uid, write_image, write_series
from medflow.problems import InputProblem


def _volume(depth=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(-1000, 1500, (depth, size, size)))


def test_lean_reader_matches_pydicom_on_every_file_it_accepts(tmp_path):
    write_series(tmp_path / "s", _volume(), spacing=(2.0, 0.5, 0.5))
    write_image(tmp_path / "mono1.dcm", np.arange(64, dtype=np.uint8).reshape(8, 8), photometric="MONOCHROME1")
    files = [Path(f) for f in get_testdata_files()] + sorted(tmp_path.rglob("*.dcm"))
    accepted = 0
    buffer = bytearray()
    for f in files:
        got = dicom_native.read_native(f, buffer)
        if got is None:
            continue
        accepted += 1
        arr, header = got
        ds = pydicom.dcmread(f)
        np.testing.assert_array_equal(arr, ds.pixel_array, err_msg=str(f))
        for kw in ("Rows", "Columns", "BitsStored", "PixelRepresentation", "SOPInstanceUID"):
            if kw in ds:
                assert str(header.get(kw)) == str(ds.get(kw)), (f, kw)
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if ds.get(kw):
                np.testing.assert_allclose(header[kw], [float(v) for v in ds.get(kw)], err_msg=str(f))
    assert accepted >= 20  # the synthetic series plus the uncompressed greyscale test files


def test_lean_reader_declines_compressed_and_colour(tmp_path):
    write_series(tmp_path / "rle", _volume(2), transfer_syntax=RLELossless)
    assert dicom_native.read_native(next((tmp_path / "rle").iterdir())) is None
    assert dicom_native.read_native(Path(get_testdata_file("SC_rgb.dcm", download=False))) is None


def test_ct_image_is_hu_through_the_modality_lut(tmp_path):
    hu = np.array([[-1000, -50], [0, 1200]], dtype=float)
    path = write_image(tmp_path / "ct.dcm", hu, modality="CT")
    img = dicom_read.read_image(path)
    np.testing.assert_array_equal(img.pixels, hu)
    assert img.units == "HU"
    assert img.spacing == (0.2, 0.2)


def test_monochrome1_is_inverted(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    p1 = write_image(tmp_path / "m1.dcm", 255 - grey, modality="DX", photometric="MONOCHROME1")
    p2 = write_image(tmp_path / "m2.dcm", grey, modality="DX")
    np.testing.assert_array_equal(dicom_read.read_image(p1).pixels, dicom_read.read_image(p2).pixels)


def test_series_sorted_by_position_not_name_or_instance_number(tmp_path):
    vol = _volume(8)
    names = [f"{n}.dcm" for n in ["h", "c", "a", "f", "b", "g", "e", "d"]]
    paths = write_series(tmp_path / "s", vol, file_names=names, spacing=(3.0, 1.0, 1.0))
    for k, p in enumerate(paths):  # InstanceNumber lies: reversed
        ds = pydicom.dcmread(p)
        ds.InstanceNumber = len(paths) - k
        ds.save_as(p)
    series = dicom_series.read_series(tmp_path / "s", lambda stored, ds: dicom_read.modality_values(stored, ds))
    got = np.stack([s.pixels for s in series.slices])
    np.testing.assert_array_equal(got, vol)
    np.testing.assert_allclose(np.diff(series.z), 3.0)
    assert series.spacing == (3.0, 1.0, 1.0)
    assert series.units == "HU"


def test_series_sorted_along_a_tilted_normal(tmp_path):
    """Sagittal slices: normal = row × column = (0,1,0) × (0,0,-1) = (-1,0,0); x falls with k, so the
    position along the normal rises with k even though a sort on x (or z) would reverse or tie."""
    vol = _volume(5)
    paths = write_series(tmp_path / "s", vol)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [10.0 - 2.0 * k, 0.0, 0.0]
        ds.save_as(p)
        p.rename(p.with_name(f"{len(paths) - k}.dcm"))
    series = dicom_series.read_series(tmp_path / "s", lambda stored, ds: dicom_read.modality_values(stored, ds))
    np.testing.assert_array_equal(np.stack([s.pixels for s in series.slices]), vol)
    np.testing.assert_allclose(series.z, [-10.0 + 2.0 * k for k in range(5)])


def _edit(path, **tags):
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path)


def _expect_problem(folder, *words):
    with pytest.raises(InputProblem) as err:
        dicom_series.read_series(folder, lambda stored, ds: stored)
    for w in words:
        assert w in err.value.reason, err.value.reason
    return err.value


def test_missing_slice_is_rejected(tmp_path):
    paths = write_series(tmp_path / "s", _volume(8))
    paths[4].unlink()
    _expect_problem(tmp_path / "s", "missing or misplaced slices", "ImagePositionPatient")


def test_duplicate_position_is_rejected(tmp_path):
    paths = write_series(tmp_path / "s", _volume(5))
    _edit(paths[3], ImagePositionPatient=pydicom.dcmread(paths[2]).ImagePositionPatient)
    _expect_problem(tmp_path / "s", "duplicate slice position", paths[3].name)


def test_mixed_rows_columns_is_rejected(tmp_path):
    write_series(tmp_path / "s", _volume(4, 16))
    other = write_series(tmp_path / "o", _volume(1, 12), seed_key="series", sop_uids=[deterministic_uid("x")])
    other[0].rename(tmp_path / "s" / "zz.dcm")
    _expect_problem(tmp_path / "s", "mixed Rows (0028,0010)/Columns (0028,0011)")


def test_mixed_pixel_spacing_and_orientation_are_rejected(tmp_path):
    paths = write_series(tmp_path / "a", _volume(4))
    _edit(paths[1], PixelSpacing=[0.9, 0.9])
    _expect_problem(tmp_path / "a", "mixed PixelSpacing (0028,0030)")
    paths = write_series(tmp_path / "b", _volume(4))
    _edit(paths[2], ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6])
    _expect_problem(tmp_path / "b", "mixed ImageOrientationPatient (0020,0037)")


def test_missing_position_is_rejected(tmp_path):
    paths = write_series(tmp_path / "s", _volume(3))
    ds = pydicom.dcmread(paths[1])
    del ds.ImagePositionPatient
    ds.save_as(paths[1])
    _expect_problem(tmp_path / "s", "no ImagePositionPatient (0020,0032)", paths[1].name)


def test_truncated_and_non_dicom_files_are_rejected(tmp_path):
    paths = write_series(tmp_path / "s", _volume(4, 32))
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 700])
    _expect_problem(tmp_path / "s", paths[2].name, "truncated")
    paths = write_series(tmp_path / "r", _volume(3))
    paths[0].write_bytes(np.random.default_rng(0).bytes(3000))
    _expect_problem(tmp_path / "r", "not a DICOM file", paths[0].name)


def test_missing_pixel_data_is_rejected(tmp_path):
    path = write_image(tmp_path / "x.dcm", np.zeros((4, 4), np.uint8))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(InputProblem, match=r"no pixel data: PixelData \(7FE0,0010\) is missing"):
        dicom_read.read_image(path)


def test_undecodable_transfer_syntax_names_syntax_and_plugins(tmp_path, monkeypatch):
    path = write_image(tmp_path / "x.dcm", np.zeros((8, 8), np.uint8), transfer_syntax=RLELossless)
    from pydicom.pixels.decoders import base

    def no_plugins(*args, **kwargs):
        raise RuntimeError("Unable to decode: the 'pylibjpeg-rle' or 'gdcm' plugin is required")

    monkeypatch.setattr(base.Decoder, "as_array", no_plugins)
    with pytest.raises(InputProblem) as err:
        dicom_read.read_image(path)
    assert "RLE Lossless (1.2.840.10008.1.2.5)" in err.value.reason
    assert "pylibjpeg-rle" in err.value.reason


def test_multiframe_rejected_as_2d_image_but_accepted_as_volume():
    path = Path(get_testdata_file("emri_small.dcm", download=False))  # 10 frames of 64×64 MR
    with pytest.raises(InputProblem, match="multi-frame"):
        dicom_read.read_image(path)
    vol = dicom_read.read_image(path, multiframe="accept")
    assert vol.pixels.shape == (10, 64, 64)
    np.testing.assert_array_equal(vol.pixels, pydicom.dcmread(path).pixel_array)
