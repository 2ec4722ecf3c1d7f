"""Masks drawn on a sample's DICOM series as a DICOM RTSTRUCT (contours) or DICOM SEG (frames).

The mask becomes the union of the ROIs (RTSTRUCT, by ROIName) or segments (SEG, by SegmentLabel)
whose name matches the modality's ``mask_roi`` pattern (fnmatch, case-insensitive; default every one),
a 0/1 uint8 array on the image series' own voxels, in medflow's one orientation (the array
:func:`medflow.io.images.read_volume` gives for that series, :mod:`medflow.io.volume_files`), with the
series' geometry, so ingest checks it against the image like any mask file.

Both need the image to be the DICOM series folder they were drawn on: an RTSTRUCT's contours are in
patient millimetres and a SEG's frames point at the series' SOP instances, so only that series places
them. A mask that references another series (``SeriesInstanceUID``), matches no ROI/segment or cannot
be read raises :class:`~medflow.problems.InputProblem` whose reason names what is wrong but repeats
no header text: no ROI or segment names, no UIDs (they identify the study), no file names.

Libraries: highdicom reads SEG (frame ↔ source instance mapping, fractional/binary, sparse frames).
RTSTRUCT is read with pydicom and rasterised here, as rt-utils does it (``cv2.fillPoly`` of the
contour polygons of one slice in pixel coordinates), on top of rt-utils' RTSTRUCT check; its own
``RTStruct.get_roi_mask_by_name`` is not used because (rt-utils 1.2.7) it (1) loads and decodes the
whole series folder itself (a second decode of every slice), (2) allocates each slice mask as
Columns×Rows, wrong for non-square images, (3) maps column index to PixelSpacing[0] (the row
spacing), wrong for non-square pixels, and (4) places a contour only through its optional
ContourImageSequence, silently dropping contours without one; here the slice comes from the contour's
position along the slice normal, and the series geometry is medflow's own (:func:`check_geometry`).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import pydicom

from medflow.io import volume_files
from medflow.io.dicom_read import is_dicom_file, pixel_spacing
from medflow.io.dicom_series import Series, SeriesSlice, check_geometry, series_files
from medflow.problems import InputProblem

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")  # SEG, label map SEG
# A contour may lie this far (in slice gaps) from the slice it is put on (TPS round positions).
_SLICE_TOL = 0.25


def kind_of(path: Path) -> str | None:
    """"RTSTRUCT" or "SEG" for a DICOM file of that kind, else None (header only; never raises)."""
    path = Path(path)
    if not path.is_file() or not is_dicom_file(path):
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:
        return None
    sop, modality = str(ds.get("SOPClassUID", "")), str(ds.get("Modality", "")).upper()
    if sop == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "RTSTRUCT"
    if sop in SEG_SOP_CLASSES or modality == "SEG":
        return "SEG"
    return None


def read_mask(path: Path, kind: str, image: Path | None, pattern: str | None) -> tuple[np.ndarray, tuple, tuple, tuple]:
    """(mask D×H×W uint8, spacing, origin, direction) of an RTSTRUCT/SEG file on the series ``image``,
    in medflow's orientation."""
    path = Path(path)
    if image is None or not Path(image).is_dir():
        what = "no image" if image is None else _image_kind(Path(image))
        raise InputProblem(
            f"a {kind} mask needs its image to be the DICOM series folder it was drawn on; the image is {what}", path
        )
    series = _series_headers(Path(image))
    mask = _rtstruct(path, series, pattern) if kind == "RTSTRUCT" else _seg(path, series, pattern)
    origin, direction = volume_files.series_geometry(series)
    return volume_files.to_convention(mask, series.spacing, origin, direction)


def _image_kind(path: Path) -> str:
    if not path.exists():
        return "missing"
    fmt = volume_files.file_format(path)
    if fmt:
        return f"a {fmt} file"
    return "a NumPy array" if path.suffix.lower() in (".npy", ".npz") else "a single file"


def _floats(value, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return arr if arr is not None and arr.shape == (n,) else None


def _series_headers(folder: Path) -> Series:
    """The image series as ingest sorts and checks it (check_geometry), from the headers alone."""
    slices = []
    for f in series_files(folder):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as exc:
            raise InputProblem(f"a slice of the image series cannot be read ({type(exc).__name__})", folder) from exc
        if "Rows" not in ds or "Columns" not in ds:
            continue  # not an image (e.g. a structure set kept in the folder)
        slices.append(SeriesSlice(
            f, None, str(ds.get("SOPInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")),
            _floats(ds.get("ImagePositionPatient"), 3), _floats(ds.get("ImageOrientationPatient"), 6),
            pixel_spacing(ds), (int(ds.Rows), int(ds.Columns)),
        ))
    if not slices:
        raise InputProblem("the image folder holds no DICOM image slices", folder)
    ordered, z, gap = check_geometry(folder, slices)
    first = ordered[0]
    if first.position is None or first.orientation is None or first.spacing is None:
        raise InputProblem("the image series has no ImagePositionPatient/ImageOrientationPatient/PixelSpacing "
                           "to place the mask on", folder)
    return Series(ordered, z, (gap, *first.spacing), "raw")


def _select(names: list[str], pattern: str | None, what: str, kind: str) -> list[int]:
    """Indices of ``names`` matching ``pattern`` (all without one); none raises (names not quoted:
    they are header text)."""
    if not names:
        raise InputProblem(f"the {kind} mask holds no {what}s")
    if not pattern:
        return list(range(len(names)))
    hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n.strip().lower(), pattern.lower())]
    if not hits:
        count = f"{len(names)} {what}{'s' if len(names) > 1 else ''}"
        raise InputProblem(f"no {what} of the {kind} mask matches {pattern!r} ({count})")
    return hits


def _check_series(referenced: set[str], series: Series, kind: str) -> None:
    if referenced and series.slices[0].series_uid not in referenced:
        raise InputProblem(f"the {kind} mask references another series than the image")


# -------------------------------------------------------------------------------------------- RTSTRUCT


def _rtstruct(path: Path, series: Series, pattern: str | None) -> np.ndarray:
    from rt_utils.rtstruct_builder import RTStructBuilder

    try:
        ds = pydicom.dcmread(path)
        RTStructBuilder.validate_rtstruct(ds)  # the SOP class and the three ROI sequences
    except Exception as exc:
        raise InputProblem(f"the RTSTRUCT mask cannot be read ({type(exc).__name__})", path) from exc
    referenced, contour_sops = set(), set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for ser in study.get("RTReferencedSeriesSequence", []):
                referenced.add(str(ser.get("SeriesInstanceUID", "")))
                contour_sops |= {str(c.get("ReferencedSOPInstanceUID", "")) for c in ser.get("ContourImageSequence", [])}
    _check_series(referenced - {""}, series, "RTSTRUCT")
    if not referenced - {""} and contour_sops - {""} and not (contour_sops & set(series.sop_instance_uids)):
        raise InputProblem("the RTSTRUCT mask references another series than the image")
    rois = list(ds.StructureSetROISequence)
    chosen = _select([str(r.get("ROIName", "")) for r in rois], pattern, "ROI", "RTSTRUCT")
    numbers = {str(rois[i].ROINumber) for i in chosen}
    first = series.slices[0]
    d, (h, w) = len(series.slices), first.shape
    mask = np.zeros((d, h, w), np.uint8)
    for roi in ds.ROIContourSequence:
        if str(roi.get("ReferencedROINumber", "")) in numbers:
            _fill_roi(mask, roi.get("ContourSequence", []), series)
    return mask


def _fill_roi(mask: np.ndarray, contours, series: Series) -> None:
    """OR one ROI's closed planar contours into ``mask`` (all polygons of a slice in one fillPoly, as
    rt-utils does, so an inner contour is a hole)."""
    import cv2

    first = series.slices[0]
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]  # column index runs along row_dir
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    gap, row_sp, col_sp = series.spacing
    per_slice: dict[int, list[np.ndarray]] = {}
    for c in contours:
        if str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
            continue  # points and open polylines enclose no voxels
        pts = _floats(c.get("ContourData"), len(c.get("ContourData") or []))
        if pts is None or pts.size < 3 or pts.size % 3:  # 1-2 points: a 1-2 voxel ROI (fillPoly fills them)
            raise InputProblem("the RTSTRUCT mask holds a contour without readable ContourData points")
        rel = pts.reshape(-1, 3) - first.position
        along = rel @ normal  # mm from the first slice (series.z ascends along the normal)
        k = along / gap if np.isfinite(gap) and gap > 0 else along
        k_mean = float(np.mean(k))
        idx = round(k_mean)
        if abs(k_mean - idx) > _SLICE_TOL or np.ptp(k) > 2 * _SLICE_TOL or not 0 <= idx < mask.shape[0]:
            raise InputProblem("an RTSTRUCT contour lies off the image's slices (between them or outside the series)")
        xy = np.stack([rel @ row_dir / col_sp, rel @ col_dir / row_sp], axis=1)  # (column, row) pixel coords
        per_slice.setdefault(idx, []).append(np.round(xy).astype(np.int32).reshape(-1, 1, 2))
    for idx, polygons in per_slice.items():
        layer = np.zeros(mask.shape[1:], np.uint8)
        cv2.fillPoly(layer, polygons, 1)
        mask[idx] |= layer


# ------------------------------------------------------------------------------------------------- SEG


def _seg(path: Path, series: Series, pattern: str | None) -> np.ndarray:
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
        referenced = {str(s.get("SeriesInstanceUID", "")) for s in seg.get("ReferencedSeriesSequence", [])}
        segments = list(seg.SegmentSequence)
        sources = {sop for _study, _series, sop in seg.get_source_image_uids()}
    except Exception as exc:
        raise InputProblem(f"the SEG mask cannot be read ({type(exc).__name__})", path) from exc
    _check_series(referenced - {""}, series, "SEG")
    chosen = _select([str(s.get("SegmentLabel", "")) for s in segments], pattern, "segment", "SEG")
    numbers = [int(segments[i].SegmentNumber) for i in chosen]
    d, (h, w) = len(series.slices), series.slices[0].shape
    if (int(seg.Rows), int(seg.Columns)) != (h, w):
        raise InputProblem(f"the SEG mask's frames are {int(seg.Rows)}×{int(seg.Columns)} but the image's slices are {h}×{w}")
    on_image = [i for i, uid in enumerate(series.sop_instance_uids) if uid in sources]
    if not on_image:
        raise InputProblem("the SEG mask's frames reference none of the image's slices")
    mask = np.zeros((d, h, w), np.uint8)
    try:
        arr = seg.get_pixels_by_source_instance(
            [series.sop_instance_uids[i] for i in on_image], segment_numbers=numbers, combine_segments=False,
        )
    except Exception as exc:
        raise InputProblem(f"the SEG mask's frames cannot be placed on the image's slices ({type(exc).__name__})",
                           path) from exc
    arr = np.asarray(arr)
    inside = arr >= 0.5 if arr.dtype.kind == "f" else arr > 0  # a FRACTIONAL SEG: at least half the voxel
    mask[on_image] = np.any(inside, axis=-1)
    return mask
