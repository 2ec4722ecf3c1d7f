"""2D image / volume / container readers and the resize helpers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from medflow.io import images
from medflow.io.dicom_write import write_image, write_series
from medflow.problems import InputProblem


def read_2d(path, size=None, channels=1):
    """A 2D image as ingest reads it: (resized image, units)."""
    arr, spacing, units = images.load_image_2d(path)
    return images.finish_2d(arr, spacing, size, channels), units


def test_resize_area_and_linear():
    arr = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(images.resize2d(arr, (2, 2)), arr.reshape(2, 2, 2, 2).mean(axis=(1, 3)))
    assert images.resize2d(arr, (8, 8)).shape == (8, 8)
    assert images.resize2d(arr, (4, 4)) is arr


def test_resize3d_linear_matches_torch_convention():
    vol = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    out = images.resize3d_linear(vol, (4, 2, 2))
    assert out.shape == (4, 2, 2)
    # align-corners=False: output centre 0 maps to input 0.5 - 0.5*... → mean of the 2×2 block in-plane
    np.testing.assert_allclose(out[0], vol[0].reshape(2, 2, 2, 2).mean(axis=(1, 3)))
    np.testing.assert_allclose(out[-1], vol[1].reshape(2, 2, 2, 2).mean(axis=(1, 3)))
    np.testing.assert_allclose(out[1], 0.75 * out[0] + 0.25 * out[-1])


def test_resize_nearest_keeps_labels():
    mask = np.zeros((5, 7, 9), np.uint8)
    mask[1:4, 2:5, 3:7] = 1
    mask[2, 3, 4] = 2
    for size in [(10, 14, 18), (3, 4, 5), (5, 7, 9)]:
        out = images.resize_nearest(mask, size)
        assert out.shape == size
        assert set(np.unique(out)) <= {0, 1, 2}
    np.testing.assert_array_equal(images.resize_nearest(mask, (10, 14, 18))[::2, ::2, ::2], mask)


def test_png_grey_rgb_16bit_and_channels(tmp_path):
    grey = (np.arange(64).reshape(8, 8) * 3).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    img, units = read_2d(tmp_path / "g.png", (8, 8))
    np.testing.assert_array_equal(img.pixels, grey)
    assert img.pixels.dtype == np.float32 and units == "raw" and img.spacing is None

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    one, _ = read_2d(tmp_path / "c.png", (4, 4), channels=1)
    np.testing.assert_allclose(one.pixels, 0.299 * 200, rtol=1e-5)
    three, _ = read_2d(tmp_path / "c.png", (4, 4), channels=3)
    assert three.pixels.shape == (3, 4, 4)
    np.testing.assert_allclose(three.pixels[0], 200)

    wide = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    np.testing.assert_array_equal(read_2d(tmp_path / "w.png")[0].pixels, wide)

    Image.fromarray(grey).save(tmp_path / "g.tif")
    Image.fromarray(grey).save(tmp_path / "g.bmp")
    Image.fromarray(grey).save(tmp_path / "g.jpg", quality=100)
    for name in ("g.tif", "g.bmp"):
        np.testing.assert_array_equal(read_2d(tmp_path / name)[0].pixels, grey)
    assert np.abs(read_2d(tmp_path / "g.jpg")[0].pixels - grey).max() < 4


def test_not_a_png_and_multiframe_tiff(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not a png at all")
    with pytest.raises(InputProblem, match="cannot be read as an image"):
        read_2d(tmp_path / "bad.png")
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (1, 2)]
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(InputProblem, match="2 frames"):
        read_2d(tmp_path / "m.tif")


def test_dicom_2d_spacing_scaled_by_resize(tmp_path):
    path = write_image(tmp_path / "x.dcm", np.zeros((16, 8), np.uint8), spacing=(0.5, 0.25))
    img, _ = read_2d(path, (8, 4))
    assert img.spacing == (1.0, 0.5)


def test_volume_from_series_npy_npz(tmp_path):
    vol = np.random.default_rng(0).uniform(0, 1000, (4, 6, 6)).round()
    write_series(tmp_path / "s", vol, modality="MR", spacing=(2.0, 1.0, 1.0))
    got = images.read_volume(tmp_path / "s")
    np.testing.assert_array_equal(got.pixels, vol)
    assert got.spacing == (2.0, 1.0, 1.0) and got.units == "raw"
    np.save(tmp_path / "v.npy", vol)
    np.testing.assert_array_equal(images.read_volume(tmp_path / "v.npy").pixels, vol)
    np.savez(tmp_path / "v.npz", image=vol, other=vol[:1])
    np.testing.assert_array_equal(images.read_volume(tmp_path / "v.npz").pixels, vol)
    np.save(tmp_path / "flat.npy", vol[0])
    with pytest.raises(InputProblem, match="D×H×W"):
        images.read_volume(tmp_path / "flat.npy")


def test_mask_must_hold_integer_labels(tmp_path):
    np.save(tmp_path / "m.npy", np.array([[[0.0, 1.0]]]))
    assert images.read_mask(tmp_path / "m.npy").dtype == np.uint8
    np.save(tmp_path / "p.npy", np.array([[[0.2, 0.7]]]))
    with pytest.raises(InputProblem, match="integer labels"):
        images.read_mask(tmp_path / "p.npy")


def test_container_rows_read_once_sorted(tmp_path):
    data = np.arange(10 * 3 * 3, dtype=np.int16).reshape(10, 3, 3)
    with h5py.File(tmp_path / "c.hdf5", "w") as f:
        f["ct_slices"] = data
    rows, bad = images.read_container_rows(tmp_path / "c.hdf5", [7, 2, 2, 12])
    assert sorted(rows) == [2, 7] and list(bad) == [12]
    np.testing.assert_array_equal(rows[7], data[7])
    assert "out of range" in bad[12]
    with pytest.raises(InputProblem, match="no dataset 'nope'"):
        images.read_container_rows(tmp_path / "c.hdf5", [1], "nope")
