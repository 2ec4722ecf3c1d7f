"""ingest_modality on small synthetic inputs of every kind: values, layout, chunks, filters, problems."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

import medflow
from medflow.ingest import ingest_modality
from medflow.ingest.h5out import H5Sink
from medflow.io.dicom_write import FakePatient, deterministic_uid, write_image, write_series
from medflow.problems import BadInputError, read_problems


def manifest(ids, **cols):
    return pd.DataFrame({"sample_id": ids, "patient_id": ids, "center": "A", **cols})


def run(tmp_path, man, modality, spec, **kw):
    out = tmp_path / "out" / f"{modality}.{'parquet' if spec['kind'] in ('table', 'events', 'notes') else 'h5'}"
    probs = tmp_path / "out" / f"{modality}.problems.csv"
    summary = ingest_modality(man, tmp_path, modality, spec, out, probs, progress=False, **kw)
    return summary, out, read_problems(probs)


def hu_volume(depth, size, seed):
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(-1024, 2000, (depth, size, size)))


# ---------------------------------------------------------------------------------------------- slices


def write_shuffled_series(folder, vol, key, rng):
    depth = len(vol)
    uids = [str(deterministic_uid(key, "sop", k)) for k in range(depth)]
    names = [f"{n:03d}.dcm" for n in rng.permutation(depth)]
    paths = write_series(folder, vol, seed_key=key, sop_uids=uids, file_names=names, spacing=(2.5, 0.8, 0.8))
    for p, inst in zip(paths, rng.permutation(depth), strict=True):  # InstanceNumber shuffled too
        ds = pydicom.dcmread(p)
        ds.InstanceNumber = int(inst) + 1
        ds.save_as(p)
    return uids


@pytest.fixture
def slice_cohort(tmp_path):
    rng = np.random.default_rng(3)
    vols, uids = {}, {}
    for i, depth in enumerate([5, 3, 4]):
        sid = f"S{i}"
        vols[sid] = hu_volume(depth, 32, i)
        uids[sid] = write_shuffled_series(tmp_path / "ct" / sid, vols[sid], sid, rng)
    labels = [
        {"sample_id": "S0", "sop_instance_uid": uids["S0"][3], "pe_present_on_image": 1},
        {"sample_id": "S0", "sop_instance_uid": uids["S0"][0], "pe_present_on_image": 0},
        {"sample_id": "S2", "sop_instance_uid": uids["S2"][1], "pe_present_on_image": 1},
    ]
    pd.DataFrame(labels).sample(frac=1, random_state=0).to_csv(tmp_path / "slice_labels.csv", index=False)
    man = manifest(["S0", "SX", "S1", "S2"], ct=["ct/S0", "", "ct/S1", "ct/S2"])
    return tmp_path, man, vols, uids


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_slices_layout_values_labels(slice_cohort, compression):
    tmp_path, man, vols, uids = slice_cohort
    spec = {"kind": "slices", "size": [16, 16], "slice_labels": "slice_labels.csv"}
    summary, out, problems = run(tmp_path, man, "ct", spec, compression=compression, source_hash="abc")
    assert problems == []
    assert (summary.n_ok, summary.n_problems, summary.n_missing, summary.n_slices) == (3, 0, 1, 12)
    with h5py.File(out) as f:
        assert list(f["sample_id"].asstr()[:]) == ["S0", "S1", "S2"]
        np.testing.assert_array_equal(f["offsets"][:], [0, 5, 8, 12])
        images = f["images"]
        assert images.shape == (12, 16, 16) and images.dtype == np.int16
        assert images.chunks == (1, 16, 16)
        if compression == "none":
            assert images.compression is None
        else:
            assert images.compression == compression and images.shuffle
        stack = images[:]
        for i, sid in enumerate(["S0", "S1", "S2"]):
            a, b = f["offsets"][i], f["offsets"][i + 1]
            block = vols[sid].reshape(-1, 16, 2, 16, 2).mean(axis=(2, 4))
            np.testing.assert_array_equal(stack[a:b], np.floor(block + 0.5))  # area mean, HU, position order
            assert list(f["sop_instance_uid"].asstr()[a:b]) == uids[sid]
            np.testing.assert_allclose(np.diff(f["z"][a:b]), 2.5)
        lab = f["slice_label"][:]
        assert lab.dtype == np.int8
        expected = np.full(12, -1)
        expected[[3, 0, 8 + 1]] = [1, 0, 1]
        np.testing.assert_array_equal(lab, expected)
        np.testing.assert_allclose(f["spacing"][0], [2.5, 1.6, 1.6])
        attrs = dict(f.attrs)
        assert attrs["units"] == "HU" and attrs["kind"] == "slices" and attrs["modality"] == "ct"
        assert attrs["medflow_version"] == medflow.__version__ and attrs["source_hash"] == "abc"
        np.testing.assert_array_equal(attrs["size"], [16, 16])
        np.testing.assert_allclose(attrs["spacing"], [2.5, 1.6, 1.6])


def test_slices_process_pool_gives_the_same_file_content(slice_cohort):
    tmp_path, man, _, _ = slice_cohort
    spec = {"kind": "slices", "size": [16, 16]}
    _, out1, _ = run(tmp_path, man, "ct", spec, threads=1)
    one = {k: h5py.File(out1)[k][:] for k in ("images", "offsets", "z")}
    _, out2, _ = run(tmp_path, man, "ct", spec, threads=2)
    with h5py.File(out2) as f:
        for k, v in one.items():
            np.testing.assert_array_equal(f[k][:], v)


def test_slices_at_native_size_are_exact_hu(tmp_path):
    vol = hu_volume(3, 12, 9)
    write_series(tmp_path / "a", vol)
    _, out, _ = run(tmp_path, manifest(["a"], ct=["a"]), "ct", {"kind": "slices", "size": [12, 12]})
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["images"][:], vol)


# ---------------------------------------------------------------------------------------------- images


def test_image_kind_png_dicom_monochrome1_and_window(tmp_path):
    grey = (np.arange(256).reshape(16, 16) % 251).astype(np.uint8)
    (tmp_path / "img").mkdir()
    Image.fromarray(grey).save(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.dcm", 255 - grey, modality="DX", photometric="MONOCHROME1")
    hu = np.rint(np.linspace(-1000, 1000, 256)).reshape(16, 16)
    write_image(tmp_path / "img" / "c.dcm", hu, modality="CT", spacing=(0.5, 0.5))
    man = manifest(["a", "b", "c"], x=["img/a.png", "img/b.dcm", "img/c.dcm"])
    spec = {"kind": "image", "size": [8, 8], "channels": 1, "window": [-250, 150]}
    summary, out, problems = run(tmp_path, man, "x", spec)
    assert problems == [] and summary.n_ok == 3
    with h5py.File(out) as f:
        img = f["images"]
        assert img.shape == (3, 8, 8) and img.dtype == np.float32 and img.chunks == (1, 8, 8)
        expected = grey.reshape(8, 2, 8, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(img[0], expected, atol=1e-4)
        np.testing.assert_allclose(img[1], expected, atol=1e-4)  # MONOCHROME1 inverted back
        np.testing.assert_allclose(img[2], hu.reshape(8, 2, 8, 2).mean(axis=(1, 3)), atol=1e-3)
        assert f.attrs["units"] == "mixed"
        np.testing.assert_array_equal(f.attrs["window"], [-250, 150])
        np.testing.assert_allclose(f["spacing"][2], [1.0, 1.0])
        assert np.isnan(f["spacing"][0]).all()


def test_image_kind_three_channels(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 100
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    _, out, _ = run(tmp_path, manifest(["c"], x=["c.png"]), "x", {"kind": "image", "size": [4, 4], "channels": 3})
    with h5py.File(out) as f:
        assert f["images"].shape == (1, 3, 4, 4) and f["images"].chunks == (1, 3, 4, 4)
        np.testing.assert_allclose(f["images"][0, 1], 100)


# --------------------------------------------------------------------------------------------- patches


def test_patches_from_container_refs(tmp_path):
    data = np.random.default_rng(0).integers(-1000, 1000, (20, 8, 8)).astype(np.int16)
    with h5py.File(tmp_path / "all_patches.hdf5", "w") as f:
        f["ct_slices"] = data
    rows = [17, 3, 9, 3, 25]
    man = manifest([f"p{i}" for i in range(6)], patch=[f"all_patches.hdf5#{r}" for r in rows] + ["all_patches.hdf5#x"])
    summary, out, problems = run(tmp_path, man, "patch", {"kind": "patches", "size": [4, 4]}, threads=2)
    assert summary.n_ok == 4
    reasons = {p.sample_id: p.reason for p in problems}
    assert set(reasons) == {"p4", "p5"}
    assert "out of range" in reasons["p4"] and "integer row" in reasons["p5"]
    with h5py.File(out) as f:
        assert list(f["sample_id"].asstr()[:]) == ["p0", "p1", "p2", "p3"]
        for i, r in enumerate(rows[:4]):
            np.testing.assert_allclose(f["images"][i], data[r].reshape(4, 2, 4, 2).mean(axis=(1, 3)))
        assert f.attrs["units"] == "HU"


# ---------------------------------------------------------------------------------------------- volume


def test_volume_series_npy_and_mask(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.uniform(0, 1000, (6, 12, 12)).round()
    write_series(tmp_path / "v0", vol, modality="MR", spacing=(2.0, 1.0, 1.0))
    np.save(tmp_path / "v1.npy", vol)
    mask = np.zeros((6, 12, 12), np.uint8)
    mask[2:5, 3:9, 4:10] = 1
    np.save(tmp_path / "m0.npy", mask)
    np.save(tmp_path / "m1.npy", mask)
    np.save(tmp_path / "m2.npy", mask[:, :6])
    np.save(tmp_path / "v2.npy", vol)
    man = manifest(["a", "b", "c"], mri=["v0", "v1.npy", "v2.npy"], lesion_mask=["m0.npy", "m1.npy", "m2.npy"])
    spec = {"kind": "volume", "size": [3, 24, 8], "mask": "lesion_mask"}
    summary, out, problems = run(tmp_path, man, "mri", spec)
    assert summary.n_ok == 2
    assert [p.sample_id for p in problems] == ["c"]
    assert "(6, 6, 12)" in problems[0].reason and "(6, 12, 12)" in problems[0].reason
    with h5py.File(out) as f:
        assert f["images"].shape == (2, 3, 24, 8) and f["images"].chunks == (1, 3, 24, 8)
        assert f["masks"].dtype == np.uint8 and f["masks"].chunks == (1, 3, 24, 8)
        m = f["masks"][:]
        assert set(np.unique(m)) == {0, 1}
        np.testing.assert_allclose(f["images"][0], f["images"][1])
        import torch

        ref = torch.nn.functional.interpolate(
            torch.tensor(vol, dtype=torch.float32)[None, None], size=(3, 24, 8), mode="trilinear", align_corners=False
        )[0, 0].numpy()
        np.testing.assert_allclose(f["images"][0], ref, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(f["spacing"][0], [4.0, 0.5, 1.5])
        assert np.isnan(f["spacing"][1]).all()


# ---------------------------------------------------------------------------------------------- tables


def test_table_typed_and_problems(tmp_path):
    pd.DataFrame(
        {
            "sample_id": ["b", "a", "zz", "d", "d"],
            "age": ["41", "", "50", "3", "4"],
            "size_mm": ["1.5", "2", "3", "4", "5"],
            "sex": ["F", "M", "F", "M", "M"],
        }
    ).to_csv(tmp_path / "clinical.csv", index=False)
    man = manifest(["a", "b", "c", "d"])
    summary, out, problems = run(tmp_path, man, "clinical", {"kind": "table", "file": "clinical.csv"})
    frame = pd.read_parquet(out)
    assert list(frame["sample_id"]) == ["a", "b"]
    assert str(frame["age"].dtype) == "Int64" and frame["age"].isna().tolist() == [True, False]
    assert frame["size_mm"].dtype == np.float64
    assert isinstance(frame["sex"].dtype, pd.CategoricalDtype)
    reasons = {p.sample_id: p.reason for p in problems}
    assert "not in the manifest" in reasons["zz"]
    assert "several rows" in reasons["d"]
    assert "no row" in reasons["c"]
    assert summary.n_ok == 2 and summary.n_problems == 3


def test_events_window_values_and_unknown_ids(tmp_path):
    pd.DataFrame(
        {
            "admission_id": ["a", "a", "a", "b", "q", "q", "a"],
            "hours": [1.0, 50.0, -1.0, 3.5, 1.0, 2.0, 0.5],
            "variable": ["hr", "hr", "hr", "gcs", "hr", "hr", "note"],
            "value": ["80", "90", "70", "15", "1", "2", "alert"],
        }
    ).to_csv(tmp_path / "events.csv", index=False)
    man = manifest(["a", "b", "c"])
    summary, out, problems = run(tmp_path, man, "ehr", {"kind": "events", "file": "events.csv", "window_hours": 48})
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["sample_id", "hours", "variable", "value", "value_text"]
    assert list(frame["sample_id"]) == ["a", "a", "b"]
    assert list(frame["hours"]) == [0.5, 1.0, 3.5]
    assert np.isnan(frame["value"][0]) and frame["value_text"][0] == "alert"
    assert frame["value"][1] == 80.0 and pd.isna(frame["value_text"][1])
    assert [(p.sample_id, "not in the manifest" in p.reason) for p in problems] == [("q", True)]
    assert summary.n_missing == 1  # c has no events


def test_notes_file_folder_and_bad_notes(tmp_path):
    (tmp_path / "n" / "a").mkdir(parents=True)
    (tmp_path / "n" / "a" / "012.5_radiology.txt").write_text("second", encoding="utf-8")
    (tmp_path / "n" / "a" / "002.0_nursing.txt").write_text("first", encoding="utf-8")
    (tmp_path / "n" / "b.txt").write_text("only note", encoding="utf-8")
    (tmp_path / "n" / "c.txt").write_text("  \n\t ", encoding="utf-8")
    (tmp_path / "n" / "d.txt").write_bytes(b"caf\xe9 latin-1")
    man = manifest(["a", "b", "c", "d", "e"], notes=["n/a", "n/b.txt", "n/c.txt", "n/d.txt", ""])
    summary, out, problems = run(tmp_path, man, "notes", {"kind": "notes"})
    frame = pd.read_parquet(out)
    assert list(frame["sample_id"]) == ["a", "a", "b"]
    assert list(frame["text"]) == ["first", "second", "only note"]
    assert list(frame["note_index"]) == [0, 1, 0]
    assert frame["hours"][1] == 12.5 and np.isnan(frame["hours"][2])
    reasons = {p.sample_id: p.reason for p in problems}
    assert "empty" in reasons["c"] and "not valid UTF-8" in reasons["d"]
    assert summary.n_missing == 1


# ----------------------------------------------------------------------------------------- bad inputs


@pytest.fixture
def broken_cohort(tmp_path):
    good = hu_volume(4, 16, 0)
    write_series(tmp_path / "good", good, seed_key="good")
    p = write_series(tmp_path / "missing_slice", hu_volume(5, 16, 1), seed_key="ms")
    p[2].unlink()
    write_series(tmp_path / "mixed", hu_volume(3, 16, 2), seed_key="mx")
    odd = write_series(tmp_path / "tmp", hu_volume(1, 12, 3), seed_key="mx", sop_uids=[str(deterministic_uid("odd"))],
                       origin=(-120.0, -120.0, -192.5))
    odd[0].rename(tmp_path / "mixed" / "odd.dcm")
    p = write_series(tmp_path / "dup", hu_volume(3, 16, 4), seed_key="dup")
    ds = pydicom.dcmread(p[2])
    ds.ImagePositionPatient = pydicom.dcmread(p[1]).ImagePositionPatient
    ds.save_as(p[2])
    p = write_series(tmp_path / "trunc", hu_volume(3, 16, 5), seed_key="tr")
    p[1].write_bytes(p[1].read_bytes()[:-100])
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "x.dcm").write_bytes(np.random.default_rng(0).bytes(2048))
    man = manifest(
        ["good", "missing_slice", "mixed", "dup", "trunc", "random", "absent"],
        ct=["good", "missing_slice", "mixed", "dup", "trunc", "random", "nowhere"],
    )
    return tmp_path, man, good


EXPECTED_REASONS = {
    "missing_slice": "missing or misplaced slices",
    "mixed": "Rows (0028,0010)/Columns (0028,0011) in the series: file 4 of 4",
    "dup": "duplicate slice position",
    "trunc": "truncated",
    "random": "not a DICOM file",
    "absent": "not found",
}


def test_broken_series_become_problems(broken_cohort):
    tmp_path, man, good = broken_cohort
    summary, out, problems = run(tmp_path, man, "ct", {"kind": "slices", "size": [16, 16]}, threads=2)
    reasons = {p.sample_id: p.reason for p in problems}
    assert set(reasons) == set(EXPECTED_REASONS)
    for sid, words in EXPECTED_REASONS.items():
        assert words in reasons[sid], (sid, reasons[sid])
    assert all(p.file for p in problems)
    with h5py.File(out) as f:
        assert list(f["sample_id"].asstr()[:]) == ["good"]
        np.testing.assert_array_equal(f["images"][:], good)
        np.testing.assert_array_equal(f["offsets"][:], [0, 4])
    assert (summary.n_ok, summary.n_problems) == (1, 6)


def test_broken_2d_images_become_problems(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "fake.png").write_bytes(b"GIF89a but not really an image")
    (tmp_path / "rand.dcm").write_bytes(np.random.default_rng(1).bytes(500))
    p = write_image(tmp_path / "t.dcm", np.zeros((32, 32), np.uint8))
    p.write_bytes(p.read_bytes()[:-300])
    man = manifest(["ok", "fake", "rand", "t"], x=["ok.png", "fake.png", "rand.dcm", "t.dcm"])
    _, out, problems = run(tmp_path, man, "x", {"kind": "image", "size": [4, 4]})
    reasons = {p.sample_id: p.reason for p in problems}
    assert "cannot be read as an image" in reasons["fake"]
    assert "not a DICOM file" in reasons["rand"]
    assert "truncated" in reasons["t"]
    with h5py.File(out) as f:
        assert list(f["sample_id"].asstr()[:]) == ["ok"]


def test_fail_mode_raises_after_writing_problems(broken_cohort):
    tmp_path, man, _ = broken_cohort
    with pytest.raises(BadInputError, match=r"6 input problem\(s\).*ct.problems.csv"):
        run(tmp_path, man, "ct", {"kind": "slices", "size": [16, 16]}, on_bad_input="fail")
    assert len(read_problems(tmp_path / "out" / "ct.problems.csv")) == 6
    assert not (tmp_path / "out" / "ct.h5").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct.problems.csv"]


def test_fail_mode_on_tables(tmp_path):
    pd.DataFrame({"sample_id": ["a", "zz"], "x": [1, 2]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(BadInputError):
        run(tmp_path, manifest(["a"]), "t", {"kind": "table", "file": "t.csv"}, on_bad_input="fail")
    assert not (tmp_path / "out" / "t.parquet").exists()


def test_clean_run_writes_header_only_problems(tmp_path):
    write_series(tmp_path / "a", hu_volume(2, 8, 0))
    _, _, problems = run(tmp_path, manifest(["a"], ct=["a"]), "ct", {"kind": "slices", "size": [8, 8]})
    assert problems == []
    assert (tmp_path / "out" / "ct.problems.csv").read_text().strip() == "file,sample_id,reason"


@pytest.mark.parametrize("threads", [1, 2])
def test_crash_mid_write_leaves_no_output(slice_cohort, monkeypatch, threads):
    tmp_path, man, _, _ = slice_cohort
    calls = {"n": 0}
    original = H5Sink.append

    def crash(self, name, chunks):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk full (simulated)")
        original(self, name, chunks)

    monkeypatch.setattr(H5Sink, "append", crash)
    with pytest.raises(OSError, match="simulated"):
        run(tmp_path, man, "ct", {"kind": "slices", "size": [16, 16]}, threads=threads)
    out = tmp_path / "out"
    assert not (out / "ct.h5").exists()
    assert [p.name for p in out.iterdir() if p.suffix == ".h5"] == []  # no partial file either


# ---------------------------------------------------------------------------------------------- PHI


def test_no_phi_in_any_output(tmp_path):
    patient = FakePatient(name="Zyxwv^Phiname", patient_id="MRN9876543", institution="Phinstitution Hospital")
    write_series(tmp_path / "ct" / "a", hu_volume(3, 8, 0), patient=patient)
    write_image(tmp_path / "x.dcm", np.zeros((8, 8), np.uint8), patient=patient)
    man = manifest(["a"], ct=["ct/a"], img=["x.dcm"], mri=["ct/a"])
    outs = [
        run(tmp_path, man, "ct", {"kind": "slices", "size": [8, 8]})[1],
        run(tmp_path, man, "img", {"kind": "image", "size": [8, 8]})[1],
        run(tmp_path, man, "mri", {"kind": "volume", "size": [3, 8, 8]})[1],
    ]
    for out in outs:
        blob = out.read_bytes()
        for secret in (patient.name, patient.patient_id, patient.institution, "Phiname", "19600101"):
            assert secret.encode() not in blob, (out.name, secret)
            assert secret.encode("utf-16-le") not in blob


# ------------------------------------------------------------------------ reuse of the previous ingest
# reuse_previous=True: samples whose source files and settings are unchanged are copied from the
# hidden hard link to the previous output instead of decoded; the result must equal a fresh ingest.


def assert_same_h5(a, b):
    """Same datasets (values, dtype, shape, chunks, filters, stored chunk bytes) and attributes."""

    def same_attrs(x, y, where):
        assert sorted(x) == sorted(y), where
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"{where} attr {k}")

    with h5py.File(a) as fa, h5py.File(b) as fb:
        same_attrs(fa.attrs, fb.attrs, "/")
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        assert sorted(names_a) == sorted(names_b)
        for name in names_a:
            da, db = fa[name], fb[name]
            assert (da.shape, da.dtype, da.chunks, da.compression, da.shuffle) == (
                db.shape, db.dtype, db.chunks, db.compression, db.shuffle), name
            same_attrs(da.attrs, db.attrs, name)
            np.testing.assert_array_equal(da[()], db[()], err_msg=name)
            if da.chunks and da.ndim > 1:
                zeros = (0,) * (da.ndim - 1)
                for i in range(da.shape[0]):
                    assert da.id.read_direct_chunk((i, *zeros)) == db.id.read_direct_chunk((i, *zeros)), (name, i)


@pytest.fixture
def count_decodes(monkeypatch):
    """Number of samples handed to the per-sample decode (threads=1: it runs in this process)."""
    from medflow.ingest import pixels

    seen = []
    original = pixels.run_task

    def counting(task):
        seen.extend(task.sample_ids)
        return original(task)

    monkeypatch.setattr(pixels, "run_task", counting)
    return seen


def incremental(root, man, modality, spec, *, out="out", threads=1, **kw):
    """Ingest as Snakemake runs it: the output is deleted before the job, the hidden link is kept."""
    ext = "h5"
    path = root / out / f"{modality}.{ext}"
    path.unlink(missing_ok=True)
    summary = ingest_modality(man, root, modality, spec, path, root / out / f"{modality}.problems.csv",
                              progress=False, reuse_previous=True, threads=threads, source_hash="h", **kw)
    return summary, path, read_problems(root / out / f"{modality}.problems.csv")


def scratch(root, man, modality, spec, **kw):
    """A from-scratch ingest of ``man`` into a fresh folder (no previous file)."""
    import shutil

    shutil.rmtree(root / "scratch", ignore_errors=True)
    return incremental(root, man, modality, spec, out="scratch", **kw)


@pytest.fixture
def series_cohort(tmp_path):
    """Six small CT series S0..S5, one broken series, slice labels for S0, S4 and S5."""
    rng = np.random.default_rng(7)
    uids = {}
    for i, depth in enumerate([4, 3, 5, 2, 3, 4]):
        uids[f"S{i}"] = write_shuffled_series(tmp_path / "ct" / f"S{i}", hu_volume(depth, 16, 10 + i), f"S{i}", rng)
    p = write_series(tmp_path / "ct" / "bad", hu_volume(3, 16, 99), seed_key="bad")
    p[1].write_bytes(p[1].read_bytes()[:-100])
    labels = [
        {"sample_id": "S0", "sop_instance_uid": uids["S0"][1], "pe_present_on_image": 1},
        {"sample_id": "S4", "sop_instance_uid": uids["S4"][0], "pe_present_on_image": 1},
        {"sample_id": "S5", "sop_instance_uid": uids["S5"][2], "pe_present_on_image": 0},
    ]
    pd.DataFrame(labels).to_csv(tmp_path / "slice_labels.csv", index=False)

    def man(ids):
        return manifest(ids, ct=[f"ct/{s}" if s != "SX" else "" for s in ids])

    return tmp_path, man, uids


SERIES_SPEC = {"kind": "slices", "size": [8, 8], "slice_labels": "slice_labels.csv"}


@pytest.mark.parametrize("threads", [1, 2])
def test_reuse_appended_samples_only_new_ones_decoded(series_cohort, threads, caplog, request):
    root, man, _ = series_cohort
    # counting needs the decode in this process; with a pool, n_reused and the result must do
    count_decodes = request.getfixturevalue("count_decodes") if threads == 1 else []
    first = man(["S0", "SX", "bad", "S1", "S2"])
    s1, out, _ = incremental(root, first, "ct", SERIES_SPEC, threads=threads)
    assert (s1.n_ok, s1.n_reused, s1.n_problems) == (3, 0, 1)
    prev = root / "out" / ".ct.previous.h5"
    assert prev.stat().st_ino == out.stat().st_ino  # a hard link, no copy
    count_decodes.clear()

    grown = man(["S0", "SX", "bad", "S1", "S2", "S3", "S4", "S5"])  # three new patients appended
    caplog.set_level("INFO", logger="medflow.ingest")
    s2, out, problems = incremental(root, grown, "ct", SERIES_SPEC, threads=threads)
    assert (s2.n_ok, s2.n_reused, s2.n_problems, s2.n_missing) == (6, 3, 1, 1)
    if threads == 1:
        assert sorted(count_decodes) == ["S3", "S4", "S5", "bad"]  # the bad series is re-tried, never reused
    assert "3 reused from the previous ingest, 3 converted" in caplog.text
    assert [p.sample_id for p in problems] == ["bad"] and "truncated" in problems[0].reason
    assert prev.stat().st_ino == out.stat().st_ino  # the link moved to the new output

    _, ref, ref_problems = scratch(root, grown, "ct", SERIES_SPEC)
    assert_same_h5(out, ref)
    assert problems == ref_problems
    with h5py.File(out) as f:
        assert list(f["sample_id"].asstr()[:]) == ["S0", "S1", "S2", "S3", "S4", "S5"]
        assert (f["slice_label"][:] >= 0).sum() == 3


def test_reuse_reattaches_current_slice_labels(series_cohort, count_decodes):
    root, man, uids = series_cohort
    incremental(root, man(["S0", "S1"]), "ct", SERIES_SPEC)
    pd.DataFrame([{"sample_id": "S1", "sop_instance_uid": uids["S1"][2], "pe_present_on_image": 1}]).to_csv(
        root / "slice_labels.csv", index=False)
    count_decodes.clear()
    s, out, _ = incremental(root, man(["S0", "S1"]), "ct", SERIES_SPEC)
    assert s.n_reused == 2 and count_decodes == []
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["slice_label"][:], [-1] * 4 + [-1, -1, 1])
    assert_same_h5(out, scratch(root, man(["S0", "S1"]), "ct", SERIES_SPEC)[1])


def test_reuse_modified_sources_are_decoded_again(series_cohort, count_decodes):
    root, man, _ = series_cohort
    ids = ["S0", "S1", "S2", "S3"]
    incremental(root, man(ids), "ct", SERIES_SPEC)
    # S1: one file rewritten with new pixels; S2: a file only touched (same bytes, new mtime);
    # S3: a file added to the folder (an extra slice at the end of the stack)
    files1 = sorted((root / "ct" / "S1").iterdir())
    ds = pydicom.dcmread(files1[0])
    ds.PixelData = (ds.pixel_array + 7).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(files1[0])
    f2 = sorted((root / "ct" / "S2").iterdir())[0]
    st = f2.stat()
    import os

    os.utime(f2, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    vol3 = hu_volume(3, 16, 13)
    write_series(root / "ct" / "S3", vol3, seed_key="S3")  # rewrites the series (new names, uids)
    count_decodes.clear()
    s, out, problems = incremental(root, man(ids), "ct", SERIES_SPEC)
    assert sorted(count_decodes) == ["S1", "S2", "S3"] and s.n_reused == 1
    _, ref, ref_problems = scratch(root, man(ids), "ct", SERIES_SPEC)
    assert_same_h5(out, ref)
    assert problems == ref_problems


@pytest.mark.parametrize(
    "change",
    [{"size": [4, 4]}, {"compression": "lzf"}, {"compression_level": 3}, {"window": [-100, 100]}],
)
def test_reuse_nothing_when_settings_change(series_cohort, count_decodes, change, caplog):
    root, man, _ = series_cohort
    ids = ["S0", "S1", "S2"]
    incremental(root, man(ids), "ct", SERIES_SPEC)
    kw = {k: v for k, v in change.items() if k.startswith("compression")}
    spec = {**SERIES_SPEC, **{k: v for k, v in change.items() if k not in kw}}
    count_decodes.clear()
    caplog.set_level("INFO", logger="medflow.ingest")
    s, out, _ = incremental(root, man(ids), "ct", spec, **kw)
    assert s.n_reused == 0 and sorted(count_decodes) == ids
    assert "settings changed" in caplog.text
    assert_same_h5(out, scratch(root, man(ids), "ct", spec, **kw)[1])


def test_reuse_survives_a_slice_labels_change_and_a_stage_bump_disables_it(series_cohort, count_decodes, monkeypatch):
    root, man, _ = series_cohort
    ids = ["S0", "S1"]
    incremental(root, man(ids), "ct", {"kind": "slices", "size": [8, 8]})
    count_decodes.clear()
    s, _, _ = incremental(root, man(ids), "ct", SERIES_SPEC)  # labels added: arrays are unchanged
    assert s.n_reused == 2 and count_decodes == []
    from medflow import stages

    monkeypatch.setitem(stages.STAGE_VERSIONS, "ingest", stages.STAGE_VERSIONS["ingest"] + 1)
    s, _, _ = incremental(root, man(ids), "ct", SERIES_SPEC)
    assert s.n_reused == 0 and sorted(count_decodes) == ids


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not_ingest_h5"])
def test_reuse_ignores_a_corrupt_previous_file(series_cohort, count_decodes, damage, caplog):
    root, man, _ = series_cohort
    ids = ["S0", "S1", "S2"]
    incremental(root, man(ids), "ct", SERIES_SPEC)
    prev = root / "out" / ".ct.previous.h5"
    data = prev.read_bytes()
    prev.unlink()  # break the link first: the damage must not reach the output under test
    if damage == "garbage":
        prev.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif damage == "truncated":
        prev.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        prev.write_bytes(b"")
    else:
        with h5py.File(prev, "w") as f:
            f["images"] = np.zeros((1, 8, 8), np.int16)
            f.attrs["settings_fingerprint"] = h5py.File(root / "out" / "ct.h5").attrs["settings_fingerprint"]
    count_decodes.clear()
    caplog.set_level("INFO", logger="medflow.ingest")
    s, out, _ = incremental(root, man([*ids, "S3"]), "ct", SERIES_SPEC)
    assert s.n_reused == 0 and sorted(count_decodes) == [*ids, "S3"]
    assert any(r.levelname == "WARNING" and "previous ingest file is unusable" in r.message for r in caplog.records)
    assert_same_h5(out, scratch(root, man([*ids, "S3"]), "ct", SERIES_SPEC)[1])
    assert (root / "out" / ".ct.previous.h5").stat().st_ino == out.stat().st_ino  # a good link again


def test_reuse_failing_part_way_converts_everything(series_cohort, count_decodes, monkeypatch, caplog):
    from medflow.ingest import reuse

    root, man, _ = series_cohort
    ids = ["S0", "S1", "S2"]
    incremental(root, man(ids), "ct", SERIES_SPEC)
    calls = {"n": 0}
    original = reuse.Previous.copy

    def flaky(self, row, sink):
        calls["n"] += 1
        if calls["n"] == 2:
            raise reuse.PreviousUnreadable("chunk read failed (simulated)")
        return original(self, row, sink)

    monkeypatch.setattr(reuse.Previous, "copy", flaky)
    count_decodes.clear()
    s, out, _ = incremental(root, man([*ids, "S3"]), "ct", SERIES_SPEC)
    assert s.n_reused == 0 and sorted(count_decodes[-4:]) == [*ids, "S3"]  # the second pass decodes all
    assert "failed part-way" in caplog.text
    assert_same_h5(out, scratch(root, man([*ids, "S3"]), "ct", SERIES_SPEC)[1])


def test_reuse_removed_samples_disappear(series_cohort, count_decodes):
    root, man, _ = series_cohort
    incremental(root, man(["S0", "S1", "S2", "S3", "S4"]), "ct", SERIES_SPEC)
    count_decodes.clear()
    smaller = man(["S4", "S0", "S3"])  # S1, S2 removed, the rest reordered
    s, out, problems = incremental(root, smaller, "ct", SERIES_SPEC)
    assert (s.n_ok, s.n_reused) == (3, 3) and count_decodes == [] and problems == []
    with h5py.File(out) as f:
        assert list(f["sample_id"].asstr()[:]) == ["S4", "S0", "S3"]
    assert_same_h5(out, scratch(root, smaller, "ct", SERIES_SPEC)[1])


def test_reuse_images_with_mixed_units(tmp_path, count_decodes):
    grey = (np.arange(256).reshape(16, 16) % 251).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.png")
    write_image(tmp_path / "b.dcm", np.rint(np.linspace(-1000, 1000, 256)).reshape(16, 16), modality="CT", spacing=(0.5, 0.5))
    Image.fromarray(255 - grey).save(tmp_path / "c.png")
    spec = {"kind": "image", "size": [8, 8], "window": [-250, 150]}
    incremental(tmp_path, manifest(["a", "b"], x=["a.png", "b.dcm"]), "x", spec)
    count_decodes.clear()
    man = manifest(["a", "b", "c"], x=["a.png", "b.dcm", "c.png"])
    s, out, _ = incremental(tmp_path, man, "x", spec)
    assert s.n_reused == 2 and count_decodes == ["c"]
    with h5py.File(out) as f:
        assert f.attrs["units"] == "mixed"
        assert list(f["sample_units"].asstr()[:]) == ["raw", "HU", "raw"]
    assert_same_h5(out, scratch(tmp_path, man, "x", spec)[1])


def test_reuse_volume_with_mask(tmp_path, count_decodes):
    rng = np.random.default_rng(2)
    for i in range(3):
        np.save(tmp_path / f"v{i}.npy", rng.uniform(0, 100, (4, 8, 8)))
        np.save(tmp_path / f"m{i}.npy", (rng.uniform(size=(4, 8, 8)) > 0.5).astype(np.uint8))
    spec = {"kind": "volume", "size": [2, 4, 4], "mask": "seg"}
    man = manifest(["a", "b", "c"], mri=["v0.npy", "v1.npy", "v2.npy"], seg=["m0.npy", "m1.npy", "m2.npy"])
    incremental(tmp_path, man.iloc[:2], "mri", spec)
    np.save(tmp_path / "m1.npy", np.ones((4, 8, 8), np.uint8))  # b's mask changed, its image did not
    count_decodes.clear()
    s, out, _ = incremental(tmp_path, man, "mri", spec)
    assert s.n_reused == 1 and sorted(count_decodes) == ["b", "c"]
    assert_same_h5(out, scratch(tmp_path, man, "mri", spec)[1])


def test_reuse_patches_per_row_of_an_unchanged_container(tmp_path, count_decodes):
    data = np.random.default_rng(0).integers(-1000, 1000, (20, 8, 8)).astype(np.int16)
    with h5py.File(tmp_path / "all_patches.hdf5", "w") as f:
        f["ct_slices"] = data
    spec = {"kind": "patches", "size": [4, 4]}
    refs = [f"all_patches.hdf5#{r}" for r in (17, 3, 9, 3, 25)] + ["all_patches.hdf5#x"]
    man = manifest([f"p{i}" for i in range(6)], patch=refs)
    incremental(tmp_path, man.iloc[[0, 1, 4, 5]], "patch", spec)
    count_decodes.clear()
    s, out, problems = incremental(tmp_path, man, "patch", spec)
    # p1 and p3 are the same row: p3 is reused from p1; p4 (out of range) is re-tried
    assert s.n_reused == 3 and sorted(count_decodes) == ["p2", "p4"]
    assert sorted(p.sample_id for p in problems) == ["p4", "p5"]
    assert_same_h5(out, scratch(tmp_path, man, "patch", spec)[1])
    with h5py.File(tmp_path / "all_patches.hdf5", "a") as f:  # a rewritten container: every row again
        f["ct_slices"][0] = 0
    count_decodes.clear()
    s, _, _ = incremental(tmp_path, man, "patch", spec)
    assert s.n_reused == 0 and sorted(count_decodes) == ["p0", "p1", "p2", "p3", "p4"]


def test_reuse_off_keeps_no_previous_file_and_link_failure_disables_it(series_cohort, monkeypatch, caplog):
    root, man, _ = series_cohort
    incremental(root, man(["S0"]), "ct", SERIES_SPEC)
    assert (root / "out" / ".ct.previous.h5").exists()
    run(root, man(["S0"]), "ct", SERIES_SPEC)  # reuse off (the default): the stale link is dropped
    assert sorted(p.name for p in (root / "out").iterdir()) == ["ct.h5", "ct.problems.csv"]

    import os

    def no_links(*a, **k):
        raise OSError(1, "Operation not permitted (simulated)")

    monkeypatch.setattr(os, "link", no_links)
    caplog.set_level("INFO", logger="medflow.ingest")
    s, _, _ = incremental(root, man(["S0", "S1"]), "ct", SERIES_SPEC)
    assert s.n_ok == 2 and "cannot hard-link" in caplog.text
    assert sorted(p.name for p in (root / "out").iterdir()) == ["ct.h5", "ct.problems.csv"]


# ------------------------------------------------------------------- the study's observation window


def test_notes_outside_the_window_never_reach_the_notes_table(tmp_path, caplog):
    folder = tmp_path / "n" / "a"
    folder.mkdir(parents=True)
    for name, text in {
        "-001.0_ed.txt": "triage before admission",
        "002.0_nursing.txt": "first",
        "048_physician.txt": "at the edge",
        "047.5_radiology.txt": "last",
        "096_discharge.txt": "Discharge summary. Patient expired.",
    }.items():
        (folder / name).write_text(text, encoding="utf-8")
    (tmp_path / "n" / "096_discharge.txt").write_text("Patient expired.", encoding="utf-8")
    (tmp_path / "n" / "c.txt").write_text("no time in the name", encoding="utf-8")
    man = manifest(["a", "b", "c", "d"], notes=["n/a", "n/096_discharge.txt", "n/c.txt", ""])
    caplog.set_level("INFO", logger="medflow.ingest")
    summary, out, problems = run(tmp_path, man, "notes", {"kind": "notes", "window_hours": 48})
    frame = pd.read_parquet(out)
    assert list(frame["sample_id"]) == ["a", "a", "a"]
    assert list(frame["text"]) == ["first", "last", "at the edge"]  # [0, 48]: both ends included
    assert list(frame["hours"]) == [2.0, 47.5, 48.0] and list(frame["note_index"]) == [0, 1, 2]
    assert not frame["text"].str.contains("expired").any()
    assert "dropped 3 written outside [0, 48] h (1 samples left without notes)" in caplog.text
    # b's only note is after the window: it has no notes, like a sample without any
    assert summary.n_ok == 1 and summary.n_missing == 2
    (problem,) = problems
    assert problem.sample_id == "c" and problem.file == "n/c.txt"
    assert "no time" in problem.reason and "observation window of 48 h" in problem.reason
    assert "012.5_radiology.txt" in problem.reason  # how to name it
    # without a window the untimed note is kept (its hours NaN) and nothing is cut
    _, out, problems = run(tmp_path, man, "notes", {"kind": "notes"})
    assert problems == [] and pd.read_parquet(out)["text"].str.contains("expired").sum() == 2


def _images(tmp_path, n):
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(tmp_path / "img" / f"{i}.png")
    return [f"img/{i}.png" for i in range(n)]


@pytest.mark.parametrize("threads", [1, 2])
def test_images_outside_the_window_are_problems_and_absent_from_the_h5(tmp_path, threads):
    files = _images(tmp_path, 5)
    # as read_validated gives it: strings, empty cells NaN
    man = manifest(["a", "b", "c", "d", "e", "f"], cxr=[*files, np.nan],
                   cxr_hours=["3.5", "120", np.nan, "-2", "48", np.nan])
    spec = {"kind": "image", "size": [4, 4], "window_hours": 48}
    summary, out, problems = run(tmp_path, man, "cxr", spec, threads=threads)
    with h5py.File(out) as f:
        assert list(f["sample_id"].asstr()[:]) == ["a", "e"]
    assert (summary.n_ok, summary.n_problems, summary.n_missing) == (2, 3, 1)
    reasons = {p.sample_id: p.reason for p in problems}
    assert [p.sample_id for p in problems] == ["b", "c", "d"]  # manifest order
    assert reasons["b"] == "taken 120 h after admission, outside the observation window of 48 h"
    assert "before admission" in reasons["d"]
    assert "acquisition time is unknown" in reasons["c"] and "'cxr_hours'" in reasons["c"]
    assert {p.file for p in problems} == {"img/1.png", "img/2.png", "img/3.png"}


def test_image_window_needs_the_hours_column_and_a_window(tmp_path, caplog):
    files = _images(tmp_path, 2)
    caplog.set_level("INFO", logger="medflow.ingest")
    man = manifest(["a", "b"], cxr=files)
    summary, _, problems = run(tmp_path, man, "cxr", {"kind": "image", "size": [4, 4], "window_hours": 48})
    assert summary.n_ok == 2 and problems == []
    assert "no column 'cxr_hours'" in caplog.text and "cannot verify" in caplog.text
    # without a window the column is not a filter
    man = manifest(["a", "b"], cxr=files, cxr_hours=["1", "500"])
    summary, _, problems = run(tmp_path, man, "cxr", {"kind": "image", "size": [4, 4]})
    assert summary.n_ok == 2 and problems == []


def test_reuse_never_brings_back_an_image_outside_the_window(tmp_path):
    files = _images(tmp_path, 3)
    man = manifest(["a", "b", "c"], cxr=files, cxr_hours=["1", "2", "3"])
    spec = {"kind": "image", "size": [4, 4], "window_hours": 48}
    incremental(tmp_path, man, "cxr", spec)
    man["cxr_hours"] = ["1", "72", "3"]  # b turns out to be taken on day 4
    summary, out, problems = incremental(tmp_path, man, "cxr", {**spec, "window_hours": 48.0})
    assert summary.n_reused == 2 and [p.sample_id for p in problems] == ["b"]
    with h5py.File(out) as f:
        assert list(f["sample_id"].asstr()[:]) == ["a", "c"]
