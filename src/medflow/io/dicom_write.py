"""Write valid DICOM files (CT/MR series, single 2D images) for the demo cohorts and the tests.

The files carry real geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing,
SliceThickness), a modality LUT for CT (RescaleSlope/Intercept, so stored values become HU) and,
on purpose, fake PHI (PatientName, PatientBirthDate, InstitutionName, PatientID) so that tests can
prove none of it leaks into medflow's outputs.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

_SOP_CLASS = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "US": UltrasoundImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "OT": SecondaryCaptureImageStorage,
}

# CT stored values are unsigned 12-bit with this intercept, as most scanners write them.
CT_INTERCEPT = -1024.0
CT_SLOPE = 1.0


@dataclass(frozen=True)
class FakePatient:
    """Identifying header values that must never reach medflow outputs."""

    name: str = "Doe^Jane"
    patient_id: str = "MRN0000000"
    birth_date: str = "19600101"
    sex: str = "F"
    institution: str = "General Hospital"


def deterministic_uid(*parts: object) -> UID:
    """A valid DICOM UID derived from ``parts`` (same parts, same UID)."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _base_dataset(modality: str, sop_uid: str, patient: FakePatient, study_uid: str, series_uid: str) -> Dataset:
    sop_class = _SOP_CLASS[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.InstitutionName = patient.institution
    ds.StudyDate = ds.SeriesDate = _dt.date(2020, 1, 1).strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = "120000"  # Type 2 in the General Study module (RT tools require them)
    ds.StudyID = "1"
    ds.AccessionNumber = ds.ReferringPhysicianName = ""  # Type 2: present, may be empty (highdicom copies them)
    ds.Manufacturer = "medflow synthetic"
    return ds


def _set_pixels(ds: Dataset, stored: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    if stored.dtype not in (np.uint8, np.uint16, np.int16):
        raise TypeError(f"stored pixels must be uint8, uint16 or int16, not {stored.dtype}")
    bits = stored.dtype.itemsize * 8
    ds.Rows, ds.Columns = stored.shape[:2]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = 12 if bits == 16 and ds.get("Modality") == "CT" else bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(stored).tobytes()


def _save(ds: Dataset, path: Path, transfer_syntax: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if transfer_syntax and transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """HU → 12-bit stored CT values under the module's slope/intercept (clipped to [-1024, 3071])."""
    return np.clip(np.rint((hu - CT_INTERCEPT) / CT_SLOPE), 0, 4095).astype(np.uint16)


def write_series(
    folder: Path,
    volume: np.ndarray,
    *,
    modality: str = "CT",
    spacing: Sequence[float] = (2.5, 0.7, 0.7),
    origin: Sequence[float] = (-120.0, -120.0, -200.0),
    patient: FakePatient = FakePatient(),
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uids: Sequence[str] | None = None,
    file_names: Sequence[str] | None = None,
    transfer_syntax: str | None = None,
    seed_key: object = "series",
) -> list[Path]:
    """Write ``volume`` (D×H×W; HU for CT, unsigned intensities for MR) as one axial DICOM series.

    ``spacing`` is (slice gap, row spacing, column spacing) in mm; slice k lies at
    z = origin_z + k * slice gap. Files are named ``file_names[k]`` (default ``{SOPInstanceUID}.dcm``,
    the RSNA-PE layout). Returns the written paths in slice order.
    """
    folder = Path(folder)
    depth = volume.shape[0]
    study_uid = study_uid or deterministic_uid(seed_key, "study")
    series_uid = series_uid or deterministic_uid(seed_key, "series")
    sop_uids = list(sop_uids) if sop_uids is not None else [deterministic_uid(seed_key, "sop", k) for k in range(depth)]
    dz, dy, dx = (float(s) for s in spacing)
    paths = []
    for k in range(depth):
        ds = _base_dataset(modality, sop_uids[k], patient, study_uid, series_uid)
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = deterministic_uid(seed_key, "frame")
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2]) + k * dz]
        ds.SliceLocation = float(origin[2]) + k * dz
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        if modality == "CT":
            ds.RescaleIntercept = CT_INTERCEPT
            ds.RescaleSlope = CT_SLOPE
            ds.RescaleType = "HU"
            ds.KVP = 120
            stored = hu_to_stored(volume[k])
        else:
            stored = np.clip(np.rint(volume[k]), 0, 65535).astype(np.uint16)
        _set_pixels(ds, stored)
        name = file_names[k] if file_names is not None else f"{sop_uids[k]}.dcm"
        path = folder / name
        _save(ds, path, transfer_syntax)
        paths.append(path)
    return paths


def write_image(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "OT",
    patient: FakePatient = FakePatient(),
    spacing: Sequence[float] = (0.2, 0.2),
    seed_key: object = "image",
    transfer_syntax: str | None = None,
    photometric: str | None = None,
) -> Path:
    """Write one single-frame 2D DICOM image.

    For ``modality="CT"`` ``pixels`` are HU and get the CT modality LUT; otherwise they are stored
    as given (uint8/uint16, or H×W×3 uint8 for RGB).
    """
    path = Path(path)
    ds = _base_dataset(
        modality,
        deterministic_uid(seed_key, "sop"),
        patient,
        deterministic_uid(seed_key, "study"),
        deterministic_uid(seed_key, "series"),
    )
    ds.InstanceNumber = 1
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    if modality == "CT":
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.SliceThickness = 3.0
        ds.RescaleIntercept = CT_INTERCEPT
        ds.RescaleSlope = CT_SLOPE
        stored = hu_to_stored(pixels)
    else:
        stored = pixels
    _set_pixels(ds, stored, photometric or ("RGB" if stored.ndim == 3 else "MONOCHROME2"))
    _save(ds, path, transfer_syntax)
    return path
