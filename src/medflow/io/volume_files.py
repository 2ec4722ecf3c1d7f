"""Volumes and masks in NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and MetaImage
(``.mha``, ``.mhd``), read through SimpleITK, and the one array orientation every volume source is
brought to (:func:`to_convention`), and the image/mask geometry check (:func:`mask_mismatch`).

Why SimpleITK: it reads all four formats *and* DICOM with one geometry model, DICOM's own (origin,
spacing and direction cosines in LPS patient coordinates; NIfTI's RAS is converted on reading), so a
volume file and the DICOM series of the same voxels come with the same geometry and no per-format
code is needed here. (nibabel hands back RAS affines and reads neither NRRD nor MetaImage.)

Orientation convention, for every source with geometry (DICOM series and these formats; a .npy/.npz
array has none and is taken to be in it already): a D×H×W float32 array (slice, row, column) whose
axes run, as nearly as axis permutations and flips allow (never a resampling), towards the patient's
superior (slice), posterior (row) and left (column). That is the array read_series gives for an
axial series written with ImageOrientationPatient [1,0,0,0,1,0], as scanners write axial CT/MR, so
such a series is returned untouched. Spacing is (slice, row, column) mm, ``origin`` the LPS position
(mm) of voxel [0, 0, 0], ``direction`` the LPS unit vector of each array axis (3×3, one row per axis).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medflow.io.dicom_series import Series
from medflow.privacy import redact, spellings
from medflow.problems import InputProblem

#: File name endings read through SimpleITK, and the format named in problem reasons.
FORMATS = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}
# Geometry tolerances of the image/mask check (NIfTI keeps its header in float32).
_SPACING_TOL = 1e-3  # mm, plus 1e-4 relative
_ORIGIN_TOL = 1e-2  # mm
_DIRECTION_TOL = 1e-3


def file_format(path: Path) -> str | None:
    """The format of a volume file read through SimpleITK, or None."""
    name = Path(path).name.lower()
    return next((fmt for end, fmt in FORMATS.items() if name.endswith(end)), None)


def companion_files(path: Path) -> list[Path]:
    """The data file a detached header (``.mhd``, ``.nhdr``) names, for the reuse fingerprint."""
    path = Path(path)
    if not path.name.lower().endswith((".mhd", ".nhdr")):
        return []
    try:
        text = path.read_text(encoding="latin-1", errors="replace")[:65536]
    except OSError:
        return []
    key = "ElementDataFile" if path.name.lower().endswith(".mhd") else "data file|datafile"
    m = re.search(rf"^(?:{key})\s*[:=]\s*(.+?)\s*$", text, re.MULTILINE)
    if not m or m.group(1).upper() in ("LOCAL", "LIST") or " " in m.group(1):
        return []
    return [path.parent / m.group(1)]


def _reason(exc: Exception, path: Path) -> str:
    """The useful line of a SimpleITK error, without its source-file and data paths."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")]
    msg = " ".join(keep[-2:]) if keep else text
    msg = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*", "", msg)
    msg = re.sub(r"\w+IO\(0x[0-9a-f]+\):\s*", "", msg)
    if "Unable to determine ImageIO reader" in msg:
        return "no reader recognises its contents (corrupt, truncated or another format)"
    names = spellings(path) | {n.name for n in companion_files(path)}
    return redact(msg, names)


def read_file(path: Path, *, mask: bool = False, keep_integers: bool = False) -> tuple[np.ndarray, tuple, tuple, tuple]:
    """(pixels D×H×W as stored, spacing, origin, direction) of a NIfTI/NRRD/MetaImage file, in
    medflow's axis order (slice, row, column); float32 for a volume, the stored type for a mask (and,
    with ``keep_integers``, for a volume stored as integers)."""
    import SimpleITK as sitk  # imported here: DICOM and .npy cohorts never pay for it

    fmt = file_format(path) or "volume"
    for data in companion_files(path):
        if not data.is_file():
            raise InputProblem(f"{path.name} is a {fmt} header whose data file (named in it) is missing", path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetNumberOfThreads(1)  # ingest runs one process per core
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputProblem(f"{path.name} cannot be read as a {fmt} image: {_reason(exc, path)}", path) from exc
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputProblem(
            f"{path.name} holds {img.GetNumberOfComponentsPerPixel()} values per voxel; a scalar volume is expected", path
        )
    size = img.GetSize()
    if img.GetDimension() == 4 and size[3] == 1:  # a 4D NIfTI with one time point
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise InputProblem(f"{path.name} is a {img.GetDimension()}D image of size {size}; a 3D volume is expected", path)
    arr = sitk.GetArrayViewFromImage(img)  # index order [k, j, i] = slice, row, column
    # ITK's direction matrix has one column per index axis (i, j, k); medflow's rows are (k, j, i)
    cols = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    direction = tuple(tuple(float(v) for v in cols[:, a]) for a in (2, 1, 0))
    spacing = tuple(float(s) for s in img.GetSpacing()[::-1])
    origin = tuple(float(v) for v in img.GetOrigin())
    floats = arr.dtype.kind == "f"
    keep = mask or (keep_integers and arr.dtype.kind in "iub")
    arr = np.array(arr) if keep else arr.astype(np.float32)  # a copy: the view dies with ``img``
    if floats and not np.all(np.isfinite(arr)):
        raise InputProblem(f"{path.name} contains NaN or infinite values", path)
    return arr, spacing, origin, direction


def series_geometry(series: Series) -> tuple[tuple | None, tuple | None]:
    """Origin and axis directions of a DICOM series as read_series sorts it (slices ascending along
    row × column); (None, None) where its slices carry no position or orientation."""
    first = series.slices[0]
    if first.position is None or first.orientation is None:
        return None, None
    row, col = first.orientation[:3], first.orientation[3:]  # directions of the column and row index
    normal = np.cross(row, col)
    normal = normal / np.linalg.norm(normal)
    direction = tuple(tuple(float(v) for v in axis) for axis in (normal, col, row))
    return tuple(float(v) for v in first.position), direction


def to_convention(
    pixels: np.ndarray, spacing: tuple | None, origin: tuple | None, direction: tuple | None
) -> tuple[np.ndarray, tuple | None, tuple | None, tuple | None]:
    """Permute and flip the axes so they run superior, posterior, left (module docstring).

    Returns the inputs themselves when nothing is to change (an axial series as scanners write it),
    so those volumes stay byte for byte what they were. Without a direction, or for an obliquity
    where two axes lie closest to the same patient axis, the array is left as stored.
    """
    if direction is None:
        return pixels, spacing, origin, direction
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3).copy()
    # array axis a runs along patient axis p (L=0, P=1, S=2) and goes to position 2 - p
    target = [2 - int(np.argmax(np.abs(d[a]))) for a in range(3)]
    if sorted(target) != [0, 1, 2]:
        return pixels, spacing, origin, direction
    flips = [a for a in range(3) if d[a, 2 - target[a]] < 0]
    if not flips and target == [0, 1, 2]:
        return pixels, spacing, origin, direction
    o = None if origin is None else np.asarray(origin, dtype=np.float64)
    for a in flips:
        if o is not None and pixels.shape[a] > 1 and spacing is not None:
            o = o + (pixels.shape[a] - 1) * float(spacing[a]) * d[a]
        d[a] = -d[a]
    arr = np.flip(pixels, axis=flips) if flips else pixels
    perm = [target.index(t) for t in range(3)]
    arr = np.ascontiguousarray(np.transpose(arr, perm))
    new_spacing = None if spacing is None else tuple(float(spacing[a]) for a in perm)
    new_origin = None if o is None else tuple(float(v) for v in o)
    new_direction = tuple(tuple(float(v) for v in d[a]) for a in perm)
    return arr, new_spacing, new_origin, new_direction


def _fmt(values: Sequence[float]) -> str:
    return str(tuple(round(float(v), 4) + 0.0 for v in values))


def mask_mismatch(image: tuple, mask: tuple) -> list[str]:
    """What differs between an image's and its mask's geometry, each (shape, spacing, origin,
    direction) with None for unknown; only what both know is compared. Empty when they match."""
    out = []
    (shape, spacing, origin, direction), (m_shape, m_spacing, m_origin, m_direction) = image, mask
    if tuple(m_shape) != tuple(shape):
        out.append(f"mask shape {tuple(m_shape)} differs from the image's {tuple(shape)}")
    if spacing is not None and m_spacing is not None:
        a, b = np.asarray(spacing, dtype=float), np.asarray(m_spacing, dtype=float)
        known = np.isfinite(a) & np.isfinite(b)
        if np.any(np.abs(a - b)[known] > _SPACING_TOL + 1e-4 * np.abs(a[known])):
            out.append(f"mask spacing {_fmt(m_spacing)} differs from the image's {_fmt(spacing)}")
    if origin is not None and m_origin is not None and np.max(np.abs(np.subtract(origin, m_origin))) > _ORIGIN_TOL:
        out.append(f"mask origin {_fmt(m_origin)} differs from the image's {_fmt(origin)}")
    if direction is not None and m_direction is not None:
        a, b = np.asarray(direction, dtype=float).ravel(), np.asarray(m_direction, dtype=float).ravel()
        if np.max(np.abs(a - b)) > _DIRECTION_TOL:
            out.append(f"mask direction {_fmt(b)} differs from the image's {_fmt(a)}")
    return out
