"""Read a DICOM series folder: decode every slice, sort the slices by ImagePositionPatient projected
on the slice normal, and reject a series whose slices disagree in Rows/Columns/PixelSpacing/
orientation, share a position or leave a gap (docs/contracts.md, DICOM rules).

Slices the lean parser handles (:mod:`medflow.io.dicom_native`) skip pydicom; every other file is
read by :mod:`medflow.io.dicom_read`. Problems raise :class:`~medflow.problems.InputProblem`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medflow.io.dicom_native import read_native
from medflow.io.dicom_read import decode, is_colour, n_frames, pixel_spacing, read_dataset, tag_name, units_of
from medflow.problems import InputProblem

# Tolerances of the series checks.
_ORIENTATION_TOL = 1e-4
_SPACING_TOL = 1e-3  # mm
_DUPLICATE_TOL = 1e-3  # mm: two slices closer than this share a position
_GAP_REL, _GAP_ABS = 0.01, 0.01  # a gap may differ from the median by 1 % + 0.01 mm
# One read buffer per process, reused for every slice (see read_native).
_READ_BUFFER = bytearray()


@dataclass
class SeriesSlice:
    """One decoded slice with the geometry needed to sort and check the series."""

    path: Path
    pixels: Any  # whatever the per-slice transform returned
    sop_instance_uid: str
    series_uid: str
    position: np.ndarray | None
    orientation: np.ndarray | None
    spacing: tuple[float, float] | None
    shape: tuple[int, int]


@dataclass
class Series:
    """A checked series in position order."""

    slices: list[SeriesSlice]
    z: np.ndarray  # position along the slice normal, ascending (mm)
    spacing: tuple[float, float, float]  # (slice gap, row, column) in mm; gap NaN for one slice
    units: str
    seconds_decode: float = 0.0
    seconds_transform: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sop_instance_uids(self) -> list[str]:
        return [s.sop_instance_uid for s in self.slices]


def series_files(folder: Path) -> list[Path]:
    """The files of a series folder (hidden files and sub-folders ignored), in name order."""
    if not folder.is_dir():
        raise InputProblem(f"DICOM series folder not found: {folder}", folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputProblem(f"DICOM series folder {folder} holds no files", folder)
    return files


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputProblem(f"{path.name}: unreadable {tag_name(keyword)} {value!r}", path) from exc
    if arr.shape != (n,):
        raise InputProblem(f"{path.name}: {tag_name(keyword)} has {arr.size} values, expected {n}", path)
    return arr


def read_series(
    folder: Path,
    transform: Callable[[np.ndarray, Dataset], Any],
    *,
    files: Sequence[Path] | None = None,
) -> Series:
    """Read every file of a series folder, apply ``transform(stored_pixels, ds)`` per slice, then
    sort by position on the slice normal and check the geometry.

    ``transform`` runs right after each decode, so a long series never holds all full-size slices.
    """
    files = list(files) if files is not None else series_files(folder)
    slices: list[SeriesSlice] = []
    t_decode = t_transform = 0.0
    units = set()
    for path in files:
        t0 = time.perf_counter()
        native = read_native(path, _READ_BUFFER)
        if native is not None:
            stored, ds = native
            del native
            position = _floats(ds, "ImagePositionPatient", 3, path)
            orientation = _floats(ds, "ImageOrientationPatient", 6, path)
            spacing = pixel_spacing(ds)
            t1 = time.perf_counter()
            pixels = transform(stored, ds)
            if isinstance(pixels, np.ndarray) and np.may_share_memory(pixels, stored):
                pixels = pixels.copy()  # the stored pixels live in the reused read buffer
            del stored
            t_transform += time.perf_counter() - t1
            t_decode += t1 - t0
            units.add(units_of(ds))
            slices.append(
                SeriesSlice(path, pixels, str(ds.get("SOPInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")),
                            position, orientation, spacing, (int(ds["Rows"]), int(ds["Columns"])))
            )
            continue
        ds = read_dataset(path)
        if n_frames(ds) > 1:
            raise InputProblem(
                f"{path.name} is a multi-frame image ({tag_name('NumberOfFrames')} = {n_frames(ds)}) "
                f"inside a series folder where single-frame slices are expected",
                path,
            )
        if is_colour(ds):
            raise InputProblem(
                f"{path.name}: colour image ({tag_name('PhotometricInterpretation')} = "
                f"{ds.get('PhotometricInterpretation')}) in a series where greyscale slices are expected",
                path,
            )
        stored = decode(ds, path)
        position = _floats(ds, "ImagePositionPatient", 3, path)
        orientation = _floats(ds, "ImageOrientationPatient", 6, path)
        spacing = pixel_spacing(ds)
        t1 = time.perf_counter()
        pixels = transform(stored, ds)
        t2 = time.perf_counter()
        t_decode += t1 - t0
        t_transform += t2 - t1
        units.add(units_of(ds))
        shape = (int(ds.Rows), int(ds.Columns))
        uid, series_uid = str(ds.get("SOPInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
        # Free the full-size decoded frame (cached on the dataset too) before the next file is decoded:
        # the allocator then reuses its pages, where two live frames cost fresh page faults each time
        # (~0.5 ms per 512² slice, half of an RLE decode).
        del ds, stored
        slices.append(
            SeriesSlice(
                path=path,
                pixels=pixels,
                sop_instance_uid=uid,
                series_uid=series_uid,
                position=position,
                orientation=orientation,
                spacing=spacing,
                shape=shape,
            )
        )
    ordered, z, gap = check_geometry(folder, slices)
    first = ordered[0]
    row_sp, col_sp = first.spacing if first.spacing else (float("nan"), float("nan"))
    return Series(
        slices=ordered,
        z=z,
        spacing=(gap, row_sp, col_sp),
        units="HU" if units == {"HU"} else "raw",
        seconds_decode=t_decode,
        seconds_transform=t_transform,
    )


def check_geometry(folder: Path, slices: list[SeriesSlice]) -> tuple[list[SeriesSlice], np.ndarray, float]:
    """Sort ``slices`` by position on the slice normal; raise InputProblem on any inconsistency.

    Returns (slices in order, their positions along the normal, median gap).
    """
    first = slices[0]
    series = {s.series_uid for s in slices}
    if len(series) > 1:
        raise InputProblem(
            f"{folder.name} mixes {len(series)} series ({tag_name('SeriesInstanceUID')} differs); "
            f"give each series its own folder",
            folder,
        )
    uids = [s.sop_instance_uid for s in slices]
    if len(set(uids)) != len(uids):
        dup = next(u for u in uids if uids.count(u) > 1)
        files = [s.path.name for s in slices if s.sop_instance_uid == dup]
        raise InputProblem(f"{tag_name('SOPInstanceUID')} {dup} occurs in several files: {', '.join(files[:3])}", folder)
    for s in slices[1:]:
        if s.shape != first.shape:
            raise InputProblem(
                f"mixed {tag_name('Rows')}/{tag_name('Columns')} in the series: {s.path.name} is "
                f"{s.shape[0]}×{s.shape[1]}, {first.path.name} is {first.shape[0]}×{first.shape[1]}",
                s.path,
            )
        if (s.spacing is None) != (first.spacing is None) or (
            s.spacing is not None and np.max(np.abs(np.subtract(s.spacing, first.spacing))) > _SPACING_TOL
        ):
            raise InputProblem(
                f"mixed {tag_name('PixelSpacing')} in the series: {s.path.name} has {s.spacing}, "
                f"{first.path.name} has {first.spacing}",
                s.path,
            )
    if len(slices) == 1:
        z = np.array([float(first.position @ _normal(first)) if first.position is not None and first.orientation is not None else 0.0])
        return slices, z, float("nan")
    for s in slices:
        for kw, value in (("ImagePositionPatient", s.position), ("ImageOrientationPatient", s.orientation)):
            if value is None:
                raise InputProblem(
                    f"{s.path.name} has no {tag_name(kw)}: the series cannot be sorted by position", s.path
                )
    for s in slices[1:]:
        if np.max(np.abs(s.orientation - first.orientation)) > _ORIENTATION_TOL:
            raise InputProblem(
                f"mixed {tag_name('ImageOrientationPatient')} in the series: {s.path.name} has "
                f"{s.orientation.round(4).tolist()}, {first.path.name} has {first.orientation.round(4).tolist()}",
                s.path,
            )
    normal = _normal(first)
    z = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(z, kind="stable")
    slices = [slices[i] for i in order]
    z = z[order]
    gaps = np.diff(z)
    dup = np.flatnonzero(gaps < _DUPLICATE_TOL)
    if dup.size:
        a, b = slices[dup[0]], slices[dup[0] + 1]
        raise InputProblem(
            f"duplicate slice position: {a.path.name} and {b.path.name} share "
            f"{tag_name('ImagePositionPatient')} (z = {z[dup[0]]:.3f} mm along the slice normal)",
            b.path,
        )
    median = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - median) > _GAP_REL * median + _GAP_ABS)
    if bad.size:
        i = int(bad[0])
        raise InputProblem(
            f"missing or misplaced slices: the gap between {slices[i].path.name} (z = {z[i]:.2f} mm) and "
            f"{slices[i + 1].path.name} (z = {z[i + 1]:.2f} mm) is {gaps[i]:.3f} mm, the median gap is "
            f"{median:.3f} mm ({bad.size} irregular gap(s); {tag_name('ImagePositionPatient')})",
            slices[i + 1].path,
        )
    return slices, z, median


def _normal(s: SeriesSlice) -> np.ndarray:
    row, col = s.orientation[:3], s.orientation[3:]
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise InputProblem(f"{s.path.name}: {tag_name('ImageOrientationPatient')} rows and columns are parallel", s.path)
    return n / norm
