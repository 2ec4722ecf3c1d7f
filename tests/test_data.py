"""medflow.data: datasets over ingest files, intensity, augmentations, samplers, seeded loaders."""

from __future__ import annotations

import math
import pickle

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from medflow.data import (
    BalancedSampler,
    H5Samples,
    H5Slices,
    Intensity,
    TwoViews,
    build_augment,
    make_loader,
    set_epoch,
)
from medflow.ingest import ingest_modality

FILE_IDS = ["s3", "s0", "s5", "s1", "s4", "s2"]  # file order deliberately not sorted


def write_h5(path, ids, images, *, kind="image", units="raw", window=None, **extra):
    """An ingest-layout file: ``sample_id``, ``images`` chunked one item per chunk, attrs."""
    with h5py.File(path, "w") as f:
        f["sample_id"] = np.array(ids, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]))
        for name, data in extra.items():
            f.create_dataset(name, data=data, chunks=(1, *data.shape[1:]) if name == "masks" else None)
        f.attrs["kind"] = kind
        f.attrs["units"] = units
        if window is not None:
            f.attrs["window"] = np.array(window, dtype=np.float64)
    return path


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    images = (rng.uniform(0, 9, (len(FILE_IDS), 8, 8)) + 10 * np.arange(len(FILE_IDS))[:, None, None])
    return write_h5(tmp_path / "img.h5", FILE_IDS, images.astype(np.float32)), images.astype(np.float32)


WINDOW = Intensity("window", (0.0, 100.0))  # x / 100 on these files: items are easy to check


# ---------------------------------------------------------------------------------------------- H5Samples


def test_items_are_looked_up_by_sample_id(image_file):
    path, images = image_file
    asked = ["s2", "s5", "s0", "s4", "s1", "s3"]
    labels = [1.0, 0.0, np.nan, 1.0, 0.0, 1.0]
    ds = H5Samples(path, asked, labels, intensity=WINDOW)
    assert len(ds) == 6
    for i, sid in enumerate(asked):
        item = ds[i]
        assert item["x"].shape == (1, 8, 8) and item["x"].dtype == torch.float32
        np.testing.assert_allclose(item["x"][0].numpy(), images[FILE_IDS.index(sid)] / 100, rtol=1e-6)
        assert item["index"] == i
        assert item["y"].dtype == torch.float32 and item["y"].shape == ()
        np.testing.assert_equal(float(item["y"]), labels[i])
    assert math.isnan(float(H5Samples(path, ["s1"], intensity=WINDOW)[0]["y"]))


def test_unknown_ids_are_a_key_error_naming_them_and_the_file(image_file):
    path, _ = image_file
    with pytest.raises(KeyError) as err:
        H5Samples(path, ["s0", *[f"x{k}" for k in range(7)]], intensity=WINDOW)
    message = str(err.value)
    assert "x0" in message and "x4" in message and "x5" not in message and str(path) in message and "7 sample" in message


def test_file_opens_lazily_and_pickles_without_its_handle(image_file):
    path, images = image_file
    ds = H5Samples(path, ["s4", "s0"], intensity=WINDOW)
    assert ds._file is None  # __init__ read the index and closed the file
    first = ds[0]["x"]
    assert ds._file is not None
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._file is None
    torch.testing.assert_close(copy[0]["x"], first)
    np.testing.assert_allclose(copy[1]["x"][0].numpy(), images[1] / 100, rtol=1e-6)
    ds.close()
    assert ds._file is None
    torch.testing.assert_close(ds[0]["x"], first)  # reopens


def test_channels_of_rgb_patches_and_volumes_with_masks(tmp_path):
    rgb = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    ds = H5Samples(write_h5(tmp_path / "rgb.h5", ["a", "b"], rgb), ["b"], intensity=Intensity("zscore"))
    x = ds[0]["x"]
    assert x.shape == (3, 4, 4)
    np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy(), 0, atol=1e-5)  # per channel
    patches = write_h5(tmp_path / "p.h5", ["a", "b"], rgb[:, 0], kind="patches")
    assert H5Samples(patches, ["a"], intensity=Intensity())[0]["x"].shape == (1, 4, 4)

    rng = np.random.default_rng(1)
    vol = rng.uniform(-500, 500, (2, 3, 4, 5)).astype(np.float32)
    masks = (rng.uniform(size=(2, 3, 4, 5)) > 0.5).astype(np.uint8)
    path = write_h5(tmp_path / "v.h5", ["a", "b"], vol, kind="volume", masks=masks)
    both = H5Samples(path, ["b", "a"], intensity=Intensity("zscore"), with_mask=True)
    x = both[0]["x"]
    assert x.shape == (2, 3, 4, 5)
    assert abs(float(x[0].mean())) < 1e-5 and abs(float(x[0].std(unbiased=False)) - 1) < 1e-4
    np.testing.assert_array_equal(x[1].numpy(), masks[1])  # the mask is never normalised
    assert H5Samples(path, ["a"], intensity=Intensity()).__getitem__(0)["x"].shape == (1, 3, 4, 5)
    with pytest.raises(ValueError, match="no masks"):
        H5Samples(write_h5(tmp_path / "nomask.h5", ["a"], vol[:1], kind="volume"), ["a"], intensity=Intensity(),
                  with_mask=True)


def test_reads_a_real_ingest_volume_file_by_id(tmp_path):
    vols = {sid: np.full((3, 4, 4), 100.0 * k) + np.arange(16).reshape(4, 4) for k, sid in enumerate(["a", "b", "c"])}
    mask = np.zeros((3, 4, 4), np.uint8)
    mask[1, 1:3, 1:3] = 1
    for sid, vol in vols.items():
        np.save(tmp_path / f"{sid}.npy", vol)
        np.save(tmp_path / f"{sid}_m.npy", mask)
    manifest = pd.DataFrame({"sample_id": list(vols), "patient_id": list(vols), "center": "A",
                             "mri": [f"{s}.npy" for s in vols], "seg": [f"{s}_m.npy" for s in vols]})
    out = tmp_path / "mri.h5"
    ingest_modality(manifest, tmp_path, "mri", {"kind": "volume", "size": [3, 4, 4], "mask": "seg"}, out,
                    tmp_path / "mri.problems.csv", progress=False)
    ds = H5Samples(out, ["c", "a"], [1.0, 0.0], intensity=Intensity("window", (0, 1000)), with_mask=True)
    for i, sid in enumerate(["c", "a"]):
        x = ds[i]["x"]
        np.testing.assert_allclose(x[0].numpy(), vols[sid] / 1000, atol=1e-5)
        np.testing.assert_array_equal(x[1].numpy(), mask)


def test_worker_processes_read_the_same_items(image_file):
    path, _ = image_file
    ds = H5Samples(path, ["s5", "s1", "s3", "s0", "s2"], [0, 1, 0, 1, 0], intensity=WINDOW)
    ds[0]  # the parent has the file open when the workers fork: they must open their own
    serial = list(make_loader(ds, batch_size=2, shuffle=False, seed=0, workers=0))
    parallel = list(make_loader(ds, batch_size=2, shuffle=False, seed=0, workers=2))
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        torch.testing.assert_close(a["x"], b["x"])
        torch.testing.assert_close(a["y"], b["y"])
        assert a["index"].tolist() == b["index"].tolist()


def test_spawned_workers_get_a_picklable_dataset_and_augment(image_file):
    path, _ = image_file
    ds = H5Samples(path, ["s0", "s1", "s2"], intensity=WINDOW, augment=build_augment({"hflip": 1.0}, 2))
    ds[0]
    loader = DataLoader(ds, batch_size=3, num_workers=1, multiprocessing_context="spawn")
    batch = next(iter(loader))
    expected = torch.stack([ds[i]["x"] for i in range(3)])
    torch.testing.assert_close(batch["x"], expected)


# ---------------------------------------------------------------------------------------------- H5Slices


@pytest.fixture
def slice_file(tmp_path):
    counts = [3, 1, 2]  # samples a, b, c
    n = sum(counts)
    images = np.repeat(np.arange(n, dtype=np.int16)[:, None, None] * 10, 4, axis=1).repeat(4, axis=2)
    return write_h5(
        tmp_path / "ct.h5", ["a", "b", "c"], images, kind="slices", units="HU",
        offsets=np.r_[0, np.cumsum(counts)].astype(np.int64),
        slice_label=np.array([0, 1, -1, 1, 0, -1], dtype=np.int8),
    )


def test_slices_follow_offsets_and_carry_slice_labels(slice_file):
    ds = H5Slices(slice_file, ["c", "a"], intensity=WINDOW)
    assert len(ds) == 5
    assert ds.slice_sample.tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(ds.slice_labels, [0, np.nan, 0, 1, np.nan])
    file_slices = [4, 5, 0, 1, 2]  # c's two slices in order, then a's three
    for i, s in enumerate(file_slices):
        item = ds[i]
        assert item["x"].shape == (1, 4, 4)
        np.testing.assert_allclose(item["x"].numpy(), s * 10 / 100, rtol=1e-6)
        assert item["sample"] == ds.slice_sample[i] and item["index"] == i
        np.testing.assert_equal(float(item["y"]), ds.slice_labels[i])
    per_sample = H5Slices(slice_file, ["c", "a"], [1.0, 0.0], intensity=WINDOW)
    np.testing.assert_array_equal(per_sample.slice_labels, [1, 1, 0, 0, 0])
    assert float(per_sample[1]["y"]) == 1.0


def test_kind_mismatch_is_an_error(slice_file, image_file):
    with pytest.raises(ValueError, match="H5Slices"):
        H5Samples(slice_file, ["a"], intensity=WINDOW)
    with pytest.raises(ValueError, match="H5Samples"):
        H5Slices(image_file[0], ["s0"], intensity=WINDOW)


# ---------------------------------------------------------------------------------------------- intensity


def test_intensity_modes_give_documented_ranges():
    rng = np.random.default_rng(2)
    x = np.stack([rng.uniform(-2000, 3000, (6, 6)), rng.uniform(0, 5, (6, 6)), np.full((6, 6), 7.0)])
    w = Intensity("window", (-1000, 400))(x, "HU")
    assert w.dtype == np.float32 and w.min() == 0.0 and w.max() == 1.0
    np.testing.assert_allclose(Intensity("window", (-1000, 400))(np.array([[-300.0]]), "HU"), [[0.5]])
    z = Intensity("zscore")(x, "raw")
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(1, 2))[:2], 1, atol=1e-4)
    assert np.all(z[2] == 0)  # a constant channel: std floor, no nan
    m = Intensity("minmax")(x, "raw")
    np.testing.assert_allclose(m.min(axis=(1, 2))[:2], 0)
    np.testing.assert_allclose(m.max(axis=(1, 2))[:2], 1, rtol=1e-6)
    assert np.isfinite(m).all()
    # auto: the file's window when there is one, else zscore
    np.testing.assert_array_equal(Intensity()(x, "HU", (-1000, 400)), w)
    np.testing.assert_array_equal(Intensity()(x, "raw"), z)
    with pytest.raises(ValueError, match="needs a window"):
        Intensity("window")(x, "HU")
    with pytest.raises(ValueError, match="mixed"):
        Intensity("window", (0, 1))(x, "mixed")


def test_intensity_from_config():
    assert Intensity.from_config(None, None) == Intensity("auto", None)
    assert Intensity.from_config("zscore", (0, 1)) == Intensity("zscore", (0.0, 1.0))
    assert Intensity.from_config("auto", np.array([-100.0, 200.0])).window == (-100.0, 200.0)
    assert Intensity.from_config({"mode": "window", "window": [0, 10]}, (5, 6)).window == (0.0, 10.0)
    with pytest.raises(ValueError, match="unknown intensity key"):
        Intensity.from_config({"mode": "zscore", "clip": 3}, None)
    with pytest.raises(ValueError, match="must be one of"):
        Intensity.from_config("robust", None)
    with pytest.raises(ValueError, match="lo < hi"):
        Intensity("window", (5, 5))


# ---------------------------------------------------------------------------------------------- augment

AUG2D = {"hflip": 0.5, "vflip": 0.5, "rotate": 20, "crop": 0.7, "intensity": 0.2, "blur": 0.5, "noise": 0.05}


def test_augment_is_reproducible_under_torch_manual_seed():
    aug = build_augment(AUG2D, 2)
    x = torch.rand(1, 16, 16)
    torch.manual_seed(0)
    a = [aug(x) for _ in range(3)]
    torch.manual_seed(0)
    b = [aug(x) for _ in range(3)]
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v)
    assert not torch.equal(a[0], a[1])
    assert a[0].shape == x.shape


def test_flips_really_flip():
    x = torch.rand(2, 5, 6)
    torch.testing.assert_close(build_augment({"hflip": 1.0}, 2)(x), x.flip(-1))
    torch.testing.assert_close(build_augment({"vflip": 1.0}, 2)(x), x.flip(-2))
    v = torch.rand(1, 3, 4, 5)
    torch.testing.assert_close(build_augment({"flip": 1.0}, 3)(v), v.flip([-3, -2, -1]))


def _blob_with_mask(shape):
    mask = torch.zeros(shape)
    mask[tuple(slice(s // 4, 3 * s // 4) for s in shape)] = 1
    return mask


def _iou(a, b):
    return float((a & b).sum()) / float((a | b).sum())


@pytest.mark.parametrize(
    ("cfg", "ndim", "channel"),
    [
        ({"flip": 0.5, "rotate": [25, 25, 25], "scale": 0.2, "intensity": 0.5, "noise": 0.2}, 3, 1),
        ({"rotate": 30, "scale": 0.2}, 3, 1),
        ({"rotate": 30, "crop": 0.5, "intensity": 0.5, "blur": 1.0, "noise": 0.2}, 2, 0),
    ],
)
def test_mask_channel_stays_binary_and_moves_with_the_image(cfg, ndim, channel):
    shape = (8, 16, 16) if ndim == 3 else (24, 24)
    mask = _blob_with_mask(shape)
    x = torch.stack([mask, mask])
    aug = build_augment(cfg, ndim, mask_channel=channel)
    torch.manual_seed(3)
    changed = False
    for _ in range(5):
        y = aug(x)
        out_mask, out_img = y[channel], y[1 - channel]
        assert y.shape == x.shape
        assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
        changed |= not torch.equal(out_mask, mask)
        if "intensity" not in cfg:  # geometry alone: the image channel lands where the mask does
            assert _iou(out_img > 0.5, out_mask > 0.5) > 0.8
    assert changed


def test_unknown_or_bad_augment_keys_are_errors():
    with pytest.raises(ValueError, match=r"sharpen.*allowed: hflip, vflip, rotate, crop"):
        build_augment({"hflip": 0.5, "sharpen": 1}, 2)
    with pytest.raises(ValueError, match="hflip"):
        build_augment({"hflip": 0.5}, 3)
    with pytest.raises(ValueError, match="probability"):
        build_augment({"flip": 2}, 3)
    with pytest.raises(ValueError, match="three"):
        build_augment({"rotate": [10, 10]}, 3)
    assert build_augment(None, 2) is None and build_augment({}, 3) is None and build_augment({"noise": 0}, 2) is None


def test_two_views_are_independent_augmentations(image_file):
    path, _ = image_file
    base = H5Samples(path, ["s0", "s1"], [1.0, 0.0], intensity=WINDOW)
    pairs = TwoViews(base, build_augment({"noise": 0.1}, 2))
    item = pairs[1]
    assert set(item) == {"x1", "x2", "y", "index"}
    assert item["x1"].shape == item["x2"].shape == (1, 8, 8)
    assert not torch.equal(item["x1"], item["x2"])
    torch.testing.assert_close((item["x1"] + item["x2"]) / 2, base[1]["x"], atol=0.2, rtol=0)
    assert float(item["y"]) == 0.0 and item["index"] == 1
    with pytest.raises(ValueError, match="augment=None"):
        TwoViews(H5Samples(path, ["s0"], intensity=WINDOW, augment=build_augment({"noise": 0.1}, 2)),
                 build_augment({"noise": 0.1}, 2))
    with pytest.raises(ValueError, match="need augmentations"):
        TwoViews(base, None)


# ---------------------------------------------------------------------------------------------- sampler


def test_balanced_sampler_rotates_through_the_negatives():
    labels = np.array([1, 0, 0, np.nan, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, np.nan, 0])
    pos, neg = set(np.flatnonzero(labels == 1)), set(np.flatnonzero(labels == 0))
    sampler = BalancedSampler(labels, seed=7)
    assert len(sampler) == 6
    epochs = [list(sampler) for _ in range(math.ceil(len(neg) / len(pos)))]
    seen: set[int] = set()
    for items in epochs:
        assert len(items) == 6 and len(set(items)) == 6
        assert pos <= set(items)
        assert set(items) - pos <= neg  # never a nan label
        seen |= set(items) - pos
    assert not (set(epochs[0]) - pos) & (set(epochs[1]) - pos)  # successive epochs: other negatives
    assert seen == neg  # after ceil(n_neg / n_pos) epochs every negative has appeared
    fresh = BalancedSampler(labels, seed=7)
    fresh.set_epoch(2)
    assert list(fresh) == epochs[2]
    assert len(BalancedSampler(labels, seed=7, negatives_per_positive=2.0)) == 9
    with pytest.raises(ValueError, match="0/1"):
        BalancedSampler(np.array([0, 1, 2]), seed=0)


# ---------------------------------------------------------------------------------------------- loader


@pytest.mark.parametrize(("workers", "balanced"), [(0, False), (2, False), (0, True)])
def test_set_epoch_makes_an_epoch_independent_of_what_ran_before(image_file, workers, balanced):
    path, _ = image_file
    ids = FILE_IDS * 2
    labels = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0] * 2
    ds = H5Samples(path, ids, labels, intensity=WINDOW, augment=build_augment({"hflip": 0.5, "noise": 0.1}, 2))

    def loader():
        sampler = BalancedSampler(np.array(labels), seed=5) if balanced else None
        return make_loader(ds, batch_size=4, shuffle=True, seed=11, workers=workers, sampler=sampler)

    def run_epoch(lo, epoch):
        set_epoch(lo, epoch)
        outer = torch.get_rng_state()
        batches = [(b["index"].tolist(), b["x"]) for b in lo]
        assert torch.equal(torch.get_rng_state(), outer)  # the training loop's draws are its own
        return batches

    uninterrupted = loader()
    epochs = [run_epoch(uninterrupted, e) for e in range(4)]
    resumed = run_epoch(loader(), 3)
    assert [i for i, _ in resumed] == [i for i, _ in epochs[3]]
    for (_, a), (_, b) in zip(resumed, epochs[3], strict=True):
        torch.testing.assert_close(a, b)
    assert [i for i, _ in epochs[2]] != [i for i, _ in epochs[3]]
    assert not torch.equal(epochs[2][0][1], epochs[3][0][1])
