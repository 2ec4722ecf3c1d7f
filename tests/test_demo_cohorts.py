"""Demo cohorts: contracts, file formats, determinism, PHI in headers and the planted signal."""

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from PIL import Image

from medflow.cohort.demo import clnm as clnm_demo
from medflow.cohort.demo import generate_demo_cohort
from medflow.cohort.demo.lnmc import write_patch_file
from medflow.cohort.demo.notes_text import CONCERNING
from medflow.cohort.demo.pe import COLUMNS, write_rsna_layout
from medflow.cohort.demo.signal import empirical_auc
from medflow.cohort.manifest import load_manifest

CONFIG = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
STUDIES = CONFIG["studies"]
SMALL = {
    "clnm": {"patients": 30, "image_size": 32},
    "brainmets": {"patients": 6, "image_size": 24},
    "ehr": {"patients": 30, "image_size": 32},
}


def make(template: str, root: Path, seed: int = 3, **sizes) -> Path:
    kwargs = {**SMALL[template], **sizes}
    return generate_demo_cohort(template, root / f"{template}-{seed}", seed=seed, **kwargs)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return {t: make(t, root) for t in SMALL}


def read(manifest: Path) -> pd.DataFrame:
    return pd.read_csv(manifest, dtype=str, keep_default_na=False)


def pixels(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        return np.asarray(Image.open(path))
    if path.suffix == ".npy":
        return np.load(path)
    if path.is_dir():
        return np.stack([pydicom.dcmread(f).pixel_array for f in sorted(path.iterdir())])
    return pydicom.dcmread(path).pixel_array


def dicom_files(manifest: Path) -> list[Path]:
    return sorted(p for p in manifest.parent.rglob("*.dcm"))


@pytest.mark.parametrize("template", list(SMALL))
def test_manifest_follows_the_contract_and_the_study_config(cohorts, template):
    manifest = cohorts[template]
    # load_manifest checks columns, labels, ids, centres per patient and that every path exists
    cohort = load_manifest(manifest, STUDIES[template], missing_files="error")
    frame = cohort.manifest
    assert list(frame.columns[:3]) == ["sample_id", "patient_id", "center"]
    study = STUDIES[template]
    path_cols = [m for m, spec in study["modalities"].items() if spec["kind"] not in ("table", "events")]
    path_cols += [spec["mask"] for spec in study["modalities"].values() if spec.get("mask")]
    times = {"cxr_hours"} if template == "ehr" else set()  # acquisition times for the observation window
    assert set(frame.columns) == {"sample_id", "patient_id", "center", *study["labels"], *path_cols, *times}
    assert cohort.warnings == []  # a study with a window and images without their times would warn
    for col in path_cols:
        values = frame[col].dropna()
        values = values[values != ""]
        assert not any(Path(v).is_absolute() for v in values)
        assert all((manifest.parent / v).exists() for v in values)
    info = json.loads((manifest.parent / "cohort.json").read_text())
    assert info["source"] == "demo" and info["template"] == template and info["grouping"] == "patient"
    oracle = json.loads((manifest.parent / "oracle.json").read_text())
    assert set(oracle["tasks"]) == set(study["labels"])
    # table modalities are files named by the config, keyed by sample_id
    for spec in study["modalities"].values():
        if spec["kind"] == "table":
            table = pd.read_csv(manifest.parent / spec["file"])
            assert list(table["sample_id"]) == list(frame["sample_id"])
    assert not list(manifest.parent.parent.glob(".*partial*"))


def test_clnm_files(cohorts):
    root = cohorts["clnm"].parent
    frame = read(cohorts["clnm"])
    clinical = pd.read_csv(root / "clinical.csv")
    assert list(clinical.columns) == ["sample_id", "age", "sex", "tumour_size_mm", "multifocal"]
    assert set(clinical["sex"]) <= {"M", "F"} and set(clinical["multifocal"]) <= {0, 1}
    assert set(frame["center"]) == {"A", "B", "C"}
    assert (frame["center"] == "C").mean() == pytest.approx(clnm_demo.CENTRES["C"], abs=0.05)
    img = Image.open(root / frame["tumour_us"][0])
    assert img.mode == "L" and img.size == (32, 32)
    ds = pydicom.dcmread(root / frame["fat_ct"][0])
    assert ds.Modality == "CT"
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.min() < -900 and hu.max() > 300  # air and bone
    assert ((hu > -160) & (hu < -40)).sum() > 20  # fat


def test_brainmets_series_geometry_and_masks(cohorts):
    root = cohorts["brainmets"].parent
    frame = read(cohorts["brainmets"])
    assert len(frame) > 6  # several lesions per patient for some patients
    assert frame.groupby("patient_id")["center"].nunique().max() == 1
    assert all(s.startswith(p + "_L") for s, p in zip(frame["sample_id"], frame["patient_id"], strict=True))
    for _, row in frame.iterrows():
        slices = [pydicom.dcmread(f) for f in (root / row["mri"]).iterdir()]
        assert len({ds.SeriesInstanceUID for ds in slices}) == 1
        assert len({ds.StudyInstanceUID for ds in slices}) == 1
        assert all(ds.Modality == "MR" for ds in slices)
        slices.sort(key=lambda ds: int(ds.InstanceNumber))
        z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
        assert np.all(np.diff(z) > 0)
        volume = np.stack([ds.pixel_array for ds in slices])
        mask = np.load(root / row["lesion_mask"])
        assert mask.dtype == np.uint8 and mask.shape == volume.shape == (12, 24, 24)
        assert set(np.unique(mask)) == {0, 1}
        # the lesion is bright on the MR
        assert volume[mask == 1].mean() > volume[mask == 0].mean()
    # lesions of one patient share the study
    first = frame.groupby("patient_id")["mri"].apply(list)
    multi = first[first.apply(len) > 1].iloc[0]
    studies = {pydicom.dcmread(next((root / m).iterdir())).StudyInstanceUID for m in multi}
    assert len(studies) == 1


def test_ehr_files(cohorts):
    root = cohorts["ehr"].parent
    frame = read(cohorts["ehr"])
    assert (
        frame["sample_id"].str.fullmatch(r"A\d{6}").all()
        and frame["patient_id"].str.fullmatch(r"S\d{4}").all()
    )
    events = pd.read_csv(root / "events.csv", dtype={"value": str})
    assert list(events.columns) == ["admission_id", "hours", "variable", "value"]
    assert set(events["admission_id"]) == set(frame["sample_id"])
    assert events["variable"].nunique() == 12
    assert (events["hours"] < 0).any() and (events["hours"] > 48).any()
    text = pd.to_numeric(events["value"], errors="coerce").isna()
    assert text.any() and events.loc[text, "value"].isin(["<0.5", "<0.3", "see note"]).all()
    assert (frame["cxr"] == "").any() and (frame["notes"] == "").any()
    assert frame["cxr"].str.endswith(".dcm").any() and frame["cxr"].str.endswith(".png").any()
    late_notes = 0
    for folder in frame.loc[frame["notes"] != "", "notes"]:
        names = sorted(p.name for p in (root / folder).iterdir())
        within = [n for n in names if float(n[:5]) <= 48]
        assert 1 <= len(within) <= 3 and len(names) - len(within) <= 1
        assert all(re.fullmatch(r"\d{3}\.\d_(radiology|nursing|physician)\.txt", n) for n in within)
        assert all(re.fullmatch(r"\d{3}\.\d_discharge\.txt", n) for n in set(names) - set(within))
        late_notes += len(names) - len(within)
    assert late_notes > 0  # written after the window (the outcome in words): ingest must drop them
    taken = pd.to_numeric(frame["cxr_hours"])
    assert taken[frame["cxr"] != ""].notna().all() and taken[frame["cxr"] == ""].isna().all()
    assert (taken.dropna() >= 0).all() and (taken > 48).any()  # a few X-rays after the window
    for path in frame.loc[frame["cxr"].str.endswith(".dcm"), "cxr"]:
        ds = pydicom.dcmread(root / path)
        assert ds.Modality == "DX" and ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")


def test_ehr_nothing_after_the_window_is_ingested(cohorts, tmp_path):
    """The demo's late X-rays and discharge notes ("Patient expired") stop at ingest (48 h window)."""
    from medflow.cohort.manifest import read_validated, write_validated
    from medflow.config import check_config, ingest_spec
    from medflow.ingest import ingest_modality
    from medflow.problems import read_problems

    study = check_config(CONFIG)["studies"]["ehr"]
    checked = load_manifest(cohorts["ehr"], study)
    write_validated(checked, tmp_path / "manifest.csv", tmp_path / "cohort.json", source="m", labels=study["labels"])
    cohort = read_validated(tmp_path / "manifest.csv")
    out = {}
    for mod in ("cxr", "notes"):
        suffix = "h5" if mod == "cxr" else "parquet"
        out[mod] = tmp_path / f"{mod}.{suffix}"
        ingest_modality(cohort.manifest, cohort.root, mod, ingest_spec(study, mod), out[mod],
                        tmp_path / f"{mod}.problems.csv", progress=False)
    taken = pd.to_numeric(cohort.manifest["cxr_hours"])
    late = set(cohort.manifest.loc[taken > 48, "sample_id"])
    assert late
    with h5py.File(out["cxr"]) as f:
        assert not late & set(f["sample_id"].asstr()[:])
    assert {p.sample_id for p in read_problems(tmp_path / "cxr.problems.csv")} == late
    notes = pd.read_parquet(out["notes"])
    assert notes["hours"].between(0, 48).all() and not notes["text"].str.contains("Discharge summary").any()


@pytest.mark.parametrize("template", list(SMALL))
def test_dicom_headers_carry_fake_phi(cohorts, template):
    manifest = cohorts[template]
    ids = set(read(manifest)["patient_id"])
    files = dicom_files(manifest)
    assert files
    names = set()
    for path in files[:40]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(ds.PatientName) and ds.PatientBirthDate and ds.InstitutionName
        assert ds.PatientID.startswith("MRN") and ds.PatientID not in ids
        names.add(str(ds.PatientName))
    if template != "ehr":  # ehr has only a few DICOM X-rays
        assert len(names) > 1


@pytest.mark.parametrize("template", list(SMALL))
def test_same_seed_same_bytes_other_seed_other_data(tmp_path, cohorts, template):
    again = make(template, tmp_path)
    first = cohorts[template]
    root_a, root_b = first.parent, again.parent
    for name in ("manifest.csv", "oracle.json", "clinical.csv", "events.csv"):
        if (root_a / name).exists():
            assert (root_a / name).read_bytes() == (root_b / name).read_bytes(), name
    frame = read(first)
    cols = [c for c in ("tumour_us", "fat_ct", "mri", "lesion_mask", "cxr") if c in frame]
    for col in cols:
        for value in frame[col][:5]:
            if value:
                np.testing.assert_array_equal(pixels(root_a / value), pixels(root_b / value))
    other = make(template, tmp_path, seed=4)
    changed = read(other).drop(columns=[*cols, "notes"], errors="ignore")
    differs = not changed.equals(frame.drop(columns=[*cols, "notes"], errors="ignore"))
    value = frame[cols[0]][0]
    other_value = read(other)[cols[0]][0]
    if value and other_value and Path(value).suffix == Path(other_value).suffix:
        differs = differs or not np.array_equal(pixels(root_a / value), pixels(other.parent / other_value))
    assert differs


def test_existing_out_dir_is_replaced_whole(tmp_path):
    out = tmp_path / "c"
    (out / "old").mkdir(parents=True)
    (out / "old" / "stale.txt").write_text("x")
    generate_demo_cohort("clnm", out, patients=4, image_size=16, seed=0)
    assert not (out / "old").exists() and (out / "manifest.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_unknown_template_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown demo template"):
        generate_demo_cohort("nope", tmp_path / "x", patients=4, image_size=32, seed=0)


# --- public layouts (the importers turn them into manifests) -------------------------------------


def test_luna_patch_file_has_the_public_layout(tmp_path):
    path = tmp_path / "all_patches.hdf5"
    y, _ = write_patch_file(path, patches=300, image_size=32, seed=5)
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"ct_slices", "slice_class"}
        images, classes = f["ct_slices"][:], f["slice_class"][:]
    assert images.shape == (300, 32, 32) and images.dtype == np.int16
    assert classes.shape == (300, 1) and set(np.unique(classes)) == {0.0, 1.0}
    labels = classes[:, 0]
    assert np.all(np.diff(labels) <= 0)  # sorted by class, malignant first
    np.testing.assert_array_equal(labels, y)
    assert labels.mean() == pytest.approx(0.38, abs=0.01)
    assert images.min() >= -1024 and images.max() <= 400
    assert np.median(images) < -700  # mostly lung parenchyma
    # planted signal: the mean HU of the patch centre separates the classes
    centre = images[:, 12:20, 12:20].mean(axis=(1, 2))
    assert empirical_auc(centre, labels) > 0.7


@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    oracle = write_rsna_layout(root, patients=10, image_size=32, seed=6)
    return root, oracle


def test_rsna_train_csv_has_the_public_columns_and_consistent_labels(rsna):
    root, _ = rsna
    train = pd.read_csv(root / "train.csv")
    assert list(train.columns) == COLUMNS and len(COLUMNS) == 17
    exam_cols = COLUMNS[4:]
    studies = train.groupby("StudyInstanceUID", sort=False)
    assert (studies[exam_cols].nunique() == 1).all().all()  # exam labels repeated on every row
    exam = studies[exam_cols].first()
    pe = studies["pe_present_on_image"].max()
    assert (exam["negative_exam_for_pe"] == 1 - pe).all()
    assert 0 < pe.sum() < len(pe)
    pos, neg = exam[pe == 1], exam[pe == 0]
    assert (pos["rv_lv_ratio_gte_1"] + pos["rv_lv_ratio_lt_1"] == 1).all()
    assert (
        (neg[["rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1", "leftsided_pe", "rightsided_pe", "central_pe"]] == 0)
        .all()
        .all()
    )
    assert (pos[["leftsided_pe", "rightsided_pe", "central_pe"]].sum(axis=1) >= 1).all()
    assert (pos["chronic_pe"] + pos["acute_and_chronic_pe"] <= 1).all()
    assert studies.size().between(20, 32).all()


def test_rsna_dicom_tree_geometry_order_and_hu(rsna):
    root, _ = rsna
    train = pd.read_csv(root / "train.csv")
    shuffled = 0
    for study, rows in train.groupby("StudyInstanceUID", sort=False):
        series = rows["SeriesInstanceUID"].iloc[0]
        folder = root / "train" / study / series
        files = {p.stem: p for p in folder.glob("*.dcm")}
        assert set(files) == set(rows["SOPInstanceUID"])
        headers = {sop: pydicom.dcmread(p) for sop, p in files.items()}
        z_csv = [float(headers[sop].ImagePositionPatient[2]) for sop in rows["SOPInstanceUID"]]
        shuffled += int(np.any(np.diff(z_csv) < 0))
        ordered = sorted(headers.values(), key=lambda ds: int(ds.InstanceNumber))
        assert np.all(np.diff([float(ds.ImagePositionPatient[2]) for ds in ordered]) > 0)
        assert {ds.StudyInstanceUID for ds in ordered} == {study} and {
            ds.SeriesInstanceUID for ds in ordered
        } == {series}
        hu = np.stack(
            [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ordered]
        )
        assert hu.min() < -950 and hu.max() > 280 and hu.shape[1:] == (32, 32)
        # PE slices show a dark region inside the bright arteries: fewer contrast pixels there
        on = rows.set_index("SOPInstanceUID")["pe_present_on_image"]
        if on.sum():
            assert ordered[0].PatientName and ordered[0].PatientID.startswith("MRN")
    assert shuffled >= 8  # CSV order is not anatomical


def test_rsna_oracle_records_study_and_slice_tasks(rsna):
    _, oracle = rsna
    assert set(oracle["tasks"]) == {"pe", "pe_present_on_image"}
    slice_task = oracle["tasks"]["pe_present_on_image"]
    assert slice_task["modalities"]["ct_series"] > oracle["tasks"]["pe"]["modalities"]["ct_series"]


def _rsna_visible_draws(monkeypatch, tmp_path, patients: int, seed: int):
    """Run the RSNA-PE generator with rendering and writing stubbed out; return its oracle, the study labels
    and, per study, everything it passes to ``study_volume`` (all that reaches the pixels)."""
    from medflow.cohort.demo import pe

    drawn, written = [], []

    def volume(rng, size, depth, s, sides, run, rv_large):
        drawn.append(
            {"s": s, "sides": "+".join(sides), "run": list(run), "depth": depth, "rv": bool(rv_large)}
        )
        return np.zeros((depth, size, size))

    monkeypatch.setattr(pe, "study_volume", volume)
    monkeypatch.setattr(pe, "write_series", lambda *args, **kwargs: None)
    monkeypatch.setattr(pe, "write_csv", lambda frame, path: written.append(frame))
    oracle = pe.write_rsna_layout(tmp_path, patients=patients, image_size=16, seed=seed)
    exam = written[0].groupby("StudyInstanceUID", sort=False)["negative_exam_for_pe"].first()
    return oracle, 1 - exam.to_numpy(), pd.DataFrame(drawn)


def _plug_in_bayes_score(s: np.ndarray, cue: np.ndarray, y: np.ndarray, d: float) -> np.ndarray:
    """Log-likelihood ratio from the latent (Gaussian, separation d) plus a discrete visible cue (its
    class-conditional frequencies on these samples); ±inf where a cue value occurs in one class only."""
    llr = d * s
    with np.errstate(divide="ignore"):
        for value in np.unique(cue):
            llr[cue == value] += np.log(np.mean(cue[y == 1] == value)) - np.log(np.mean(cue[y == 0] == value))
    return llr


def test_rsna_oracle_is_an_upper_bound_for_everything_drawn_into_the_images(monkeypatch, tmp_path):
    """A scorer that sees the latent *and* every other drawn image cue (RV size, which arteries hold the
    defect-like region, the run of slices) must not beat oracle.json beyond sampling noise, and the latent
    alone must attain it: otherwise a label cue leaks outside the planted signal."""
    oracle, y, drawn = _rsna_visible_draws(monkeypatch, tmp_path, patients=5000, seed=11)
    assert len(y) == len(drawn) == 5000
    d = oracle["tasks"]["pe"]["d"]["ct_series"]
    s = drawn["s"].to_numpy()
    cue = (drawn["rv"].astype(str) + "|" + drawn["sides"]).to_numpy()
    best = _plug_in_bayes_score(s, cue, y, d)

    study_oracle = oracle["tasks"]["pe"]["modalities"]["ct_series"]
    assert empirical_auc(s, y) == pytest.approx(study_oracle, abs=0.015)
    assert empirical_auc(best, y) <= study_oracle + 0.015

    # slice level: positives are the defect run of PE studies; out-of-run slices are surely negative
    in_run = [np.isin(np.arange(row.depth), row.run) for row in drawn.itertuples()]
    slice_score = np.concatenate([np.where(m, b, -np.inf) for m, b in zip(in_run, best, strict=True)])
    slice_label = np.concatenate([m * yi for m, yi in zip(in_run, y, strict=True)])
    slice_oracle = oracle["tasks"]["pe_present_on_image"]["modalities"]["ct_series"]
    assert slice_label.sum() == oracle["tasks"]["pe_present_on_image"]["n_positive"]
    assert empirical_auc(slice_score, slice_label) <= slice_oracle + 0.005  # ~130k slices: less noise


# --- planted signal on larger cohorts ----------------------------------------------------------


def test_clnm_signal_recoverable_from_written_files(tmp_path):
    manifest = generate_demo_cohort("clnm", tmp_path / "c", patients=300, image_size=32, seed=21)
    root, frame = manifest.parent, read(manifest)
    y = frame["lnm"].astype(int).to_numpy()
    oracle = json.loads((root / "oracle.json").read_text())["tasks"]["lnm"]
    assert frame["lnm"].astype(int).mean() == pytest.approx(0.4, abs=0.02)
    for m, auc in oracle["modalities"].items():
        assert oracle["empirical"]["modalities"][m] == pytest.approx(auc, abs=0.08)
    best = max(oracle["modalities"].values())
    assert oracle["fused"]["tumour_us+fat_ct+clinical"] >= best + 0.05
    assert oracle["empirical"]["fused"]["tumour_us+fat_ct+clinical"] > max(
        oracle["empirical"]["modalities"].values()
    )

    from scipy.ndimage import gaussian_filter

    us = np.stack([np.asarray(Image.open(root / p), dtype=float) for p in frame["tumour_us"]])
    smooth = np.stack([gaussian_filter(im, 1.5) for im in us])
    contrast = np.percentile(smooth, 3, axis=(1, 2)) / np.median(smooth, axis=(1, 2))
    assert empirical_auc(-contrast, y) > oracle["modalities"]["tumour_us"] - 0.15
    hu = np.stack([pixels(root / p) - 1024.0 for p in frame["fat_ct"]])
    fat = np.where((hu > -180) & (hu < 0), hu, np.nan)[:, 4:16, 8:24]
    assert empirical_auc(np.nanmean(fat, axis=(1, 2)), y) > oracle["modalities"]["fat_ct"] - 0.15
    clinical = pd.read_csv(root / "clinical.csv")
    assert empirical_auc(clinical["tumour_size_mm"].to_numpy(), y) > oracle["modalities"]["clinical"] - 0.12


def test_ehr_signal_recoverable_and_fusion_beats_single(tmp_path):
    manifest = generate_demo_cohort("ehr", tmp_path / "e", patients=400, image_size=32, seed=22)
    root, frame = manifest.parent, read(manifest)
    oracle = json.loads((root / "oracle.json").read_text())["tasks"]
    for task, target in {"mortality": 0.12, "longstay": 0.35, "readmission": 0.15}.items():
        assert frame[task].astype(int).mean() == pytest.approx(target, abs=0.02)
        t = oracle[task]
        assert set(t["fused"]) == {"ehr+cxr+notes", "ehr+cxr", "ehr+notes", "cxr+notes"}
        assert t["fused"]["ehr+cxr+notes"] >= max(t["modalities"].values()) + 0.05
        for m, auc in t["modalities"].items():
            assert t["empirical"]["modalities"][m] == pytest.approx(auc, abs=0.08)
    y = frame.set_index("sample_id")["mortality"].astype(int)
    events = pd.read_csv(root / "events.csv", dtype={"value": str})
    events = events[(events["hours"] >= 0) & (events["hours"] <= 48)]
    lactate = pd.to_numeric(
        events.loc[events["variable"] == "lactate", "value"].str.lstrip("<"), errors="coerce"
    )
    mean_lactate = lactate.groupby(events["admission_id"]).mean().reindex(y.index)
    assert empirical_auc(mean_lactate.to_numpy(), y.to_numpy()) > 0.65
    has_notes = frame.set_index("sample_id")["notes"] != ""
    counts = {}
    for sid in y.index[has_notes]:
        text = " ".join(p.read_text() for p in (root / "notes" / sid).iterdir())
        counts[sid] = sum(text.count(s) for s in CONCERNING["mortality"])
    c = pd.Series(counts)
    assert empirical_auc(c.to_numpy(), y[c.index].to_numpy()) > 0.6


# --- full lnmc / pe cohorts (need the importers of the public layouts) ----------------------------


@pytest.mark.parametrize(
    ("template", "importer", "sizes"),
    [
        ("lnmc", "medflow.cohort.importers.luna", {"patients": 40, "image_size": 32}),
        ("pe", "medflow.cohort.importers.rsna_pe", {"patients": 5, "image_size": 32}),
    ],
)
def test_imported_demo_cohorts_follow_the_contract(tmp_path, template, importer, sizes):
    pytest.importorskip(importer)
    manifest = generate_demo_cohort(template, tmp_path / template, seed=7, **sizes)
    root = manifest.parent
    cohort = load_manifest(manifest, STUDIES[template], missing_files="error")
    column = next(iter(STUDIES[template]["modalities"]))
    assert not any(Path(v.split("#")[0]).is_absolute() for v in cohort.manifest[column])
    info = json.loads((root / "cohort.json").read_text())
    assert info["source"] == "demo" and info["template"] == template and info["grouping"] == "none"
    oracle = json.loads((root / "oracle.json").read_text())
    assert set(STUDIES[template]["labels"][:1]) <= set(oracle["tasks"])
    if template == "pe":
        assert (root / "slice_labels.csv").is_file()
    again = generate_demo_cohort(template, tmp_path / f"{template}-again", seed=7, **sizes)
    assert manifest.read_bytes() == again.read_bytes()


def test_lnmc_adopts_what_the_importer_writes(tmp_path, monkeypatch):
    """With a stand-in importer that writes absolute paths, the demo cohort still ends relative and demo."""
    import sys
    import types

    def fake_import(patch_file: Path, out_dir: Path) -> Path:
        with h5py.File(patch_file, "r") as f:
            labels = f["slice_class"][:, 0].astype(int)
        rows = [
            {"sample_id": f"patch{i}", "patient_id": f"patch{i}", "center": "unknown", "malignant": v,
             "ct_patch": f"{patch_file.resolve()}#{i}"}
            for i, v in enumerate(labels)
        ]  # fmt: skip
        pd.DataFrame(rows).to_csv(out_dir / "manifest.csv", index=False)
        info = {"source": "luna-patches", "grouping": "none", "warnings": ["no patient ids"]}
        (out_dir / "cohort.json").write_text(json.dumps(info))
        return out_dir / "manifest.csv"

    package = types.ModuleType("medflow.cohort.importers")
    module = types.ModuleType("medflow.cohort.importers.luna")
    module.import_luna_patches = fake_import
    monkeypatch.setitem(sys.modules, "medflow.cohort.importers", package)
    monkeypatch.setitem(sys.modules, "medflow.cohort.importers.luna", module)
    manifest = generate_demo_cohort("lnmc", tmp_path / "l", patients=20, image_size=16, seed=1)
    frame = read(manifest)
    assert frame["ct_patch"][3] == "all_patches.hdf5#3"
    info = json.loads((manifest.parent / "cohort.json").read_text())
    assert info["source"] == "demo" and info["grouping"] == "none" and info["warnings"] == ["no patient ids"]
    assert json.loads((manifest.parent / "oracle.json").read_text())["tasks"]["malignant"]["n"] == 20
