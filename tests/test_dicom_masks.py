"""Volume masks given as DICOM RTSTRUCT (rt-utils writes them here) or DICOM SEG (highdicom) on the
sample's image series (issue 14, point 4): rasterised on the series' voxels in medflow's one
orientation, ROIs/segments chosen by ``mask_roi``, wrong references as problem rows whose reasons
quote no file name, UID or ROI name."""

from __future__ import annotations

import contextlib
import io
import os
import re

import h5py
import numpy as np
import pandas as pd
import pydicom
import pytest

from medflow.ingest import ingest_modality
from medflow.io import images, volume_files
from medflow.io.dicom_write import write_series
from medflow.problems import InputProblem, read_problems

pytest.importorskip("rt_utils")
# rt-utils 1.2.7 sets the dataset encoding the pydicom 3 way that is deprecated
pytestmark = pytest.mark.filterwarnings("ignore:'FileDataset.is_:DeprecationWarning")
hd = pytest.importorskip("highdicom")

SHAPE = (8, 32, 28)  # D×H×W: non-square slices (rt-utils' own reader gets those wrong)
SPACING = (2.5, 0.7, 0.7)


def _planted():
    gtv = np.zeros(SHAPE, bool)
    gtv[2:5, 10:20, 5:12] = True
    brainstem = np.zeros(SHAPE, bool)
    brainstem[4:7, 22:28, 15:24] = True
    return gtv, brainstem


def _series(folder, seed_key="a", orientation=None):
    """An MR series whose intensities mark the planted ROIs (GTV 400, brainstem 250, else 100), so the
    image medflow reads shows where the mask must lie in whatever orientation the series is stored."""
    gtv, brainstem = _planted()
    vol = np.full(SHAPE, 100.0, np.float32) + 300 * gtv + 150 * brainstem
    paths = write_series(folder, vol, modality="MR", spacing=SPACING, seed_key=seed_key)
    if orientation is not None:  # rows run right→left, columns anterior←posterior (180° in-plane turn)
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.ImageOrientationPatient = orientation
            ds.save_as(path)
    return folder


def _rtstruct(series, out, rois):
    """rois: name → D×H×W bool in the series' storage order (rt-utils wants H×W×D)."""
    from rt_utils import RTStructBuilder

    rt = RTStructBuilder.create_new(dicom_series_path=str(series))
    for name, mask in rois.items():
        rt.add_roi(mask=np.transpose(mask, (1, 2, 0)), name=name)
    with contextlib.redirect_stdout(io.StringIO()):  # rt-utils prints the path it writes
        rt.save(str(out))
    return out


def _seg(series, out, segments):
    from pydicom.sr.codedict import codes

    sources = sorted((pydicom.dcmread(p) for p in series.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label=name, segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, name in enumerate(segments, 1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=np.stack(list(segments.values()), axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="medflow tests", manufacturer_model_name="synthetic", software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(out)
    return out


def _expected(image):
    """The planted GTV and brainstem, as the image medflow read marks them."""
    px = image.pixels
    return px > 300, (px > 200) & (px < 300)


@pytest.mark.parametrize("orientation", [None, [-1, 0, 0, 0, -1, 0]], ids=["axial", "turned"])
def test_rtstruct_and_seg_masks_lie_on_the_image(tmp_path, orientation):
    series = _series(tmp_path / "series", orientation=orientation)
    gtv, brainstem = _planted()  # in storage order, as the mask writers take them
    rt = _rtstruct(series, tmp_path / "rt.dcm", {"GTV_1": gtv, "Brainstem": brainstem})
    seg = _seg(series, tmp_path / "seg.dcm", {"GTV_1": gtv, "Brainstem": brainstem})
    image = images.read_volume(series)
    want_gtv, want_brainstem = _expected(image)
    assert want_gtv.sum() == gtv.sum() and want_brainstem.sum() == brainstem.sum()
    assert np.array_equal(want_gtv, gtv) == (orientation is None)  # the turned series is flipped on reading
    for path in (rt, seg):
        only_gtv = images.read_mask_volume(path, image=series, roi="gtv*")  # case-insensitive
        assert only_gtv.pixels.dtype == np.uint8
        np.testing.assert_array_equal(only_gtv.pixels, want_gtv)
        assert volume_files.mask_mismatch(image.geometry, only_gtv.geometry) == []
        union = images.read_mask_volume(path, image=series)  # default: every ROI / segment
        np.testing.assert_array_equal(union.pixels, want_gtv | want_brainstem)


def test_contour_positions_pick_the_slice_without_contour_image_references(tmp_path):
    """ContourImageSequence is optional: a contour is placed by its position along the slice normal."""
    series = _series(tmp_path / "series")
    gtv, _ = _planted()
    rt = _rtstruct(series, tmp_path / "rt.dcm", {"GTV_1": gtv})
    ds = pydicom.dcmread(rt)
    for contour in ds.ROIContourSequence[0].ContourSequence:
        del contour.ContourImageSequence
    ds.save_as(rt)
    np.testing.assert_array_equal(images.read_mask_volume(rt, image=series).pixels, gtv)


def test_one_and_two_voxel_rois_round_trip(tmp_path):
    """rt-utils writes a one- or two-point contour for a tiny ROI; it is filled, not refused."""
    series = _series(tmp_path / "series")
    tiny = np.zeros(SHAPE, bool)
    tiny[1, 3, 4] = tiny[6, 20, 10] = tiny[6, 20, 11] = True
    rt = _rtstruct(series, tmp_path / "rt.dcm", {"GTV_dot": tiny})
    np.testing.assert_array_equal(images.read_mask_volume(rt, image=series).pixels, tiny)


def test_read_mask_without_image_series_is_a_problem(tmp_path):
    series = _series(tmp_path / "series")
    gtv, _ = _planted()
    rt = _rtstruct(series, tmp_path / "rt.dcm", {"GTV_1": gtv})
    with pytest.raises(InputProblem, match="needs its image to be the DICOM series folder"):
        images.read_mask(rt)


def _uids_and_names(*files):
    out = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for elem in ds.iterall():
            if elem.VR == "UI" and elem.value:
                out.add(str(elem.value))
    return out


def test_ingest_rtstruct_and_seg_masks_and_problem_rows(tmp_path):
    gtv, brainstem = _planted()
    a, b = _series(tmp_path / "DOE^JANE_a"), _series(tmp_path / "DOE^JANE_b", seed_key="b")
    masks = {
        "rt_ok": _rtstruct(a, tmp_path / "rt_ok.dcm", {"GTV_1": gtv, "Brainstem": brainstem}),
        "rt_other": _rtstruct(b, tmp_path / "rt_other.dcm", {"GTV_1": gtv}),
        "rt_none": _rtstruct(a, tmp_path / "rt_none.dcm", {"Brainstem": brainstem, "Eye_L": brainstem, "Eye_R": gtv}),
        "seg_ok": _seg(a, tmp_path / "seg_ok.dcm", {"GTV_1": gtv, "Brainstem": brainstem}),
        "seg_other": _seg(b, tmp_path / "seg_other.dcm", {"GTV_1": gtv}),
        "seg_none": _seg(a, tmp_path / "seg_none.dcm", {"Brainstem": brainstem}),
    }
    truncated = tmp_path / "rt_cut.dcm"
    truncated.write_bytes(masks["rt_ok"].read_bytes()[:700])
    sitk = pytest.importorskip("SimpleITK")
    nifti = tmp_path / "a.nii.gz"
    sitk.WriteImage(sitk.ReadImage([str(p) for p in sorted(a.iterdir())]), str(nifti))
    rows = [(k, a.name, v.name) for k, v in masks.items()] + [("rt_cut", a.name, truncated.name),
                                                              ("nifti_rt", nifti.name, "rt_ok.dcm")]
    ids = [r[0] for r in rows]
    man = pd.DataFrame({"sample_id": ids, "patient_id": ids, "center": "A", "mri": [r[1] for r in rows],
                        "seg": [r[2] for r in rows]})
    spec = {"kind": "volume", "size": list(SHAPE), "mask": "seg", "mask_roi": "GTV*"}
    out, probs = tmp_path / "out" / "mri.h5", tmp_path / "out" / "mri.problems.csv"
    summary = ingest_modality(man, tmp_path, "mri", spec, out, probs, progress=False, reuse_previous=True)
    problems = {p.sample_id: p.reason for p in read_problems(probs)}
    assert summary.n_ok == 2 and sorted(problems) == ["nifti_rt", "rt_cut", "rt_none", "rt_other", "seg_none", "seg_other"]
    assert problems["rt_other"] == "the RTSTRUCT mask references another series than the image"
    assert problems["seg_other"] == "the SEG mask references another series than the image"
    assert problems["rt_none"] == "no ROI of the RTSTRUCT mask matches 'GTV*' (3 ROIs)"
    assert problems["seg_none"] == "no segment of the SEG mask matches 'GTV*' (1 segment)"
    assert problems["rt_cut"].startswith("the RTSTRUCT mask cannot be read (")
    assert "is a NIfTI file" in problems["nifti_rt"]
    secrets = _uids_and_names(*masks.values()) | {"GTV_1", "Brainstem", "Eye_L", "Eye_R", "DOE", "JANE"}
    for reason in problems.values():
        assert not any(s in reason for s in secrets), reason
        assert ".dcm" not in reason and ".nii" not in reason and not re.search(r"\d+\.\d+\.\d+\.\d+", reason)
    image = images.read_volume(a)
    with h5py.File(out) as f:
        assert [s.decode() for s in f["sample_id"][:]] == ["rt_ok", "seg_ok"]
        for i in range(2):
            np.testing.assert_array_equal(f["masks"][i], _expected(image)[0])
            np.testing.assert_array_equal(f["images"][i], image.pixels)

    # incremental ingest: an unchanged .dcm mask is reused, a rewritten one converted again
    out.unlink()
    again = ingest_modality(man, tmp_path, "mri", spec, out, probs, progress=False, reuse_previous=True)
    assert (again.n_ok, again.n_reused) == (2, 2)
    stat = masks["seg_ok"].stat()
    _seg(a, masks["seg_ok"], {"GTV_1": brainstem})
    os.utime(masks["seg_ok"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    out.unlink()
    third = ingest_modality(man, tmp_path, "mri", spec, out, probs, progress=False, reuse_previous=True)
    assert (third.n_ok, third.n_reused) == (2, 1)
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["masks"][1], _expected(image)[1])


# ------------------------------------------------------------------------------------------ end to end


def build_rtstruct_cohort(root, *, patients=24, image_size=32, seed=5):
    """The brainmets demo cohort re-cast as a clinical export (README, "Masks from DICOM RTSTRUCT and
    SEG"): every even lesion keeps its DICOM series and gets its mask as an RTSTRUCT (ROIs GTV_lesion
    and a decoy Brain), every odd one becomes a NIfTI volume with a NIfTI mask; one RTSTRUCT is drawn
    on another lesion's series (a problem row). Returns the manifest path."""
    import SimpleITK as sitk

    from medflow.cohort.demo import generate_demo_cohort

    generate_demo_cohort("brainmets", root, patients=patients, image_size=image_size, seed=seed)
    manifest = pd.read_csv(root / "manifest.csv")
    (root / "rtstruct").mkdir()
    (root / "nifti").mkdir()
    for i, row in manifest.iterrows():
        series, sid = root / row["mri"], row["sample_id"]
        lesion = np.load(root / row["lesion_mask"]).astype(bool)  # the series' storage order (axial)
        if i % 2 == 0:
            brain = np.zeros_like(lesion)
            brain[1:-1, 4:-4, 4:-4] = True
            drawn_on = root / manifest["mri"][i + 2] if i == 2 else series  # sample 2: another lesion's series
            mask = _rtstruct(drawn_on, root / "rtstruct" / f"{sid}.dcm", {"GTV_lesion": lesion, "Brain": brain})
            manifest.loc[i, "lesion_mask"] = str(mask.relative_to(root))
        else:
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))
            image = sitk.ReadImage(files)
            mask = sitk.GetImageFromArray(lesion.astype(np.uint8))
            mask.CopyInformation(image)
            sitk.WriteImage(image, str(root / "nifti" / f"{sid}.nii.gz"))
            sitk.WriteImage(mask, str(root / "nifti" / f"{sid}_mask.nii.gz"))
            manifest.loc[i, "mri"] = f"nifti/{sid}.nii.gz"
            manifest.loc[i, "lesion_mask"] = f"nifti/{sid}_mask.nii.gz"
    manifest.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def rtstruct_study(manifest_path):
    """The brainmets study of config/config.yaml on that cohort, small enough for 2 CPU cores."""

    def edit(config):
        study = config["studies"]["brainmets"]
        study["cohort"] = {"source": "manifest", "path": str(manifest_path)}
        study["modalities"]["mri"].update(size=[16, 32, 32], mask_roi="GTV*")
        study["split"].update(fractions={"train": 0.5, "val": 0.0, "test": 0.5}, folds=2)
        for model in study["stage1"].values():
            model["train"].update(epochs=1, batch_size=8, workers=0)
        config["studies"] = {"brainmets": study}

    return edit


@pytest.mark.slow
def test_brainmets_runs_to_its_report_on_a_nifti_and_rtstruct_cohort(tmp_path):
    from test_workflow import make_workdir, snakemake

    manifest_path = build_rtstruct_cohort(tmp_path / "export")
    (tmp_path / "work").mkdir()
    workdir = make_workdir(tmp_path / "work", rtstruct_study(manifest_path))
    snakemake(workdir, "--cores", "2", "results/brainmets/report.html")
    assert (workdir / "results/brainmets/report.html").is_file()
    problems = pd.read_csv(workdir / "results/brainmets/ingest/mri.problems.csv")
    manifest = pd.read_csv(manifest_path)
    assert problems["sample_id"].tolist() == [manifest["sample_id"][2]]
    assert problems["reason"].tolist() == ["the RTSTRUCT mask references another series than the image"]
    with h5py.File(workdir / "results/brainmets/ingest/mri.h5") as f:
        ids = f["sample_id"].asstr()[:].tolist()
        assert len(ids) == len(manifest) - 1
        for i in (0, 1):  # an RTSTRUCT and a NIfTI mask: the GTV only, where the demo planted it
            sid = manifest["sample_id"][i]
            lesion = np.load(tmp_path / "export" / "lesion_mask" / f"{sid}.npy")
            np.testing.assert_array_equal(f["masks"][ids.index(sid)], images.resize_nearest(lesion, (16, 32, 32)))
