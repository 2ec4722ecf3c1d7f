"""Read one DICOM file with pydicom: its dataset, its stored pixels, their modality values and the
geometry tags; and a single image or multi-frame volume as modality values (:func:`read_image`).

Only pixels and geometry leave this module (no names, ids, dates or institutions: no PHI).
Every way a file can be unusable raises :class:`~medflow.problems.InputProblem` with a reason that
names the file and, where one is at fault, the DICOM tag, so that ingest can list it in
``{modality}.problems.csv``.

Rules (docs/contracts.md): pixel values go through the modality LUT (RescaleSlope/Intercept or a
Modality LUT Sequence) so CT is HU; MONOCHROME1 is inverted (larger = brighter); colour becomes RGB.
Series (sorting and checking slices) are :mod:`medflow.io.dicom_series`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medflow.io.dicom_native import mask_unused_bits
from medflow.problems import InputProblem

# Transfer syntaxes whose pixel data is plain little-endian samples (read without a decoder).
_NATIVE_LE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def tag_name(keyword: str) -> str:
    """``'ImagePositionPatient'`` → ``'ImagePositionPatient (0020,0032)'`` (how reasons name tags)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` has the DICM marker at byte 128 (the DICOM file format)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dataset(path: str | Path, *, stop_before_pixels: bool = False) -> Dataset:
    """Parse one DICOM file; a non-DICOM, corrupt or truncated file raises InputProblem."""
    path = Path(path)
    if not path.is_file():
        raise InputProblem(f"file not found: {path}", path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise InputProblem(
            f"not a DICOM file: {path.name} has no 'DICM' marker at byte 128 and no readable "
            f"file meta information ({exc})",
            path,
        ) from exc
    except Exception as exc:  # pydicom raises many types (EOFError, struct.error, ValueError, ...)
        raise InputProblem(f"corrupt or truncated DICOM file {path.name}: {type(exc).__name__}: {exc}", path) from exc
    return ds


def transfer_syntax(ds: Dataset) -> str:
    """Name and UID of the dataset's transfer syntax (for messages)."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        return "unknown transfer syntax (no TransferSyntaxUID (0002,0010) in the file meta)"
    return f"{uid.name} ({uid})"


def n_frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _has_pixels(ds: Dataset) -> bool:
    return any(kw in ds for kw in _PIXEL_KEYWORDS)


def _native_fast(ds: Dataset) -> np.ndarray | None:
    """Stored values of an uncompressed single-frame 8/16-bit greyscale image without a decoder.

    Gives exactly what ``ds.pixel_array`` gives (unused high bits cleared, or sign-extended for
    signed data) at about twice the speed; None when the dataset is not that simple case.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") not in _NATIVE_LE or "PixelData" not in ds:
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits, stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        if int(ds.get("SamplesPerPixel", 1)) != 1 or n_frames(ds) != 1 or bits not in (8, 16):
            return None
    except (AttributeError, TypeError, ValueError):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    data = ds.PixelData
    if len(data) < rows * cols * dtype.itemsize:
        raise InputProblem(
            f"truncated pixel data: {tag_name('PixelData')} holds {len(data)} bytes, "
            f"{rows}×{cols}×{bits}-bit needs {rows * cols * dtype.itemsize}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    return mask_unused_bits(arr, bits, stored, signed)


def decode(ds: Dataset, path: str | Path = "") -> np.ndarray:
    """Stored pixel values (frames × rows × cols [× 3] or rows × cols [× 3]); colour is RGB.

    Raises InputProblem for missing pixel data, a transfer syntax no installed plugin decodes
    (the message names the syntax and the plugins pydicom asked for) and truncated data.
    """
    name = Path(path).name if path else "dataset"
    if not _has_pixels(ds):
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "unknown"))
        raise InputProblem(f"{name} has no pixel data: {tag_name('PixelData')} is missing (SOP class {sop})", path or None)
    try:
        fast = _native_fast(ds)
    except InputProblem as exc:
        raise InputProblem(f"{name}: {exc.reason}", path or None) from exc
    if fast is not None:
        return fast
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        raise InputProblem(
            f"{name}: cannot decode transfer syntax {transfer_syntax(ds)}; install the decoder plugin "
            f"pydicom names: {_short(exc)}",
            path or None,
        ) from exc
    except Exception as exc:
        raise InputProblem(
            f"{name}: pixel data ({transfer_syntax(ds)}) cannot be decoded, the file is probably "
            f"truncated or corrupt: {type(exc).__name__}: {_short(exc)}",
            path or None,
        ) from exc
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:
            raise InputProblem(f"{name}: palette colour lookup table cannot be applied: {_short(exc)}", path or None) from exc
    return arr


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_colour(ds: Dataset) -> bool:
    return int(ds.get("SamplesPerPixel", 1) or 1) > 1 or ds.get("PhotometricInterpretation") == "PALETTE COLOR"


def has_linear_rescale(ds: Dataset) -> bool:
    """True when the modality LUT is just RescaleSlope/Intercept (or the identity)."""
    return "ModalityLUTSequence" not in ds


def rescale(ds: Dataset) -> tuple[float, float]:
    """(slope, intercept) of the modality LUT (identity when absent)."""
    slope = ds.get("RescaleSlope", 1.0)
    intercept = ds.get("RescaleIntercept", 0.0)
    try:
        return float(slope if slope not in (None, "") else 1.0), float(intercept if intercept not in (None, "") else 0.0)
    except (TypeError, ValueError) as exc:
        raise InputProblem(f"unreadable {tag_name('RescaleSlope')}/{tag_name('RescaleIntercept')}: {exc}") from exc


def stored_range(ds: Dataset) -> tuple[float, float]:
    """Smallest and largest value the stored pixels can take (BitsStored, PixelRepresentation)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def modality_values(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Greyscale stored values → modality values (HU for CT) as float32, MONOCHROME1 inverted."""
    if has_linear_rescale(ds):
        slope, intercept = rescale(ds)
        out = arr.astype(np.float32)
        if slope != 1.0 or intercept != 0.0:
            out = out * np.float32(slope) + np.float32(intercept)
    else:
        out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        out = invert_monochrome1(out, ds)
    return out


def invert_monochrome1(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Mirror modality values over the range the stored values can map to (so larger = brighter)."""
    lo, hi = stored_range(ds)
    if has_linear_rescale(ds):
        slope, intercept = rescale(ds)
        a, b = lo * slope + intercept, hi * slope + intercept
    else:
        a, b = float(np.min(values)), float(np.max(values))
    return (np.float32(a + b) - values).astype(np.float32)


def units_of(ds: Dataset) -> str:
    """``HU`` for CT with a modality LUT (or RescaleType HU), else ``raw``."""
    if str(ds.get("RescaleType", "")).upper() == "HU":
        return "HU"
    if ds.get("Modality") == "CT" and ("RescaleIntercept" in ds or "ModalityLUTSequence" in ds):
        return "HU"
    return "raw"


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, ImagerPixelSpacing or the shared functional groups."""
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(kw)
        if value is not None and len(value) == 2:
            try:
                return float(value[0]), float(value[1])
            except (TypeError, ValueError):
                return None
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        return float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])
    except (AttributeError, IndexError, TypeError, ValueError, KeyError):
        return None


def frame_spacing(ds: Dataset) -> float | None:
    """Slice gap of a multi-frame volume (SpacingBetweenSlices, else SliceThickness) when recorded."""
    for kw in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(kw)
        if value not in (None, ""):
            try:
                return abs(float(value))
            except (TypeError, ValueError):
                pass
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        for kw in ("SpacingBetweenSlices", "SliceThickness"):
            if kw in measures:
                return abs(float(measures.get(kw)))
    except (AttributeError, IndexError, TypeError, ValueError, KeyError):
        pass
    return None


# ----------------------------------------------------------------------------------- single images


@dataclass
class DicomImage:
    """Modality values of a single image or multi-frame volume, with what the outputs may keep."""

    pixels: np.ndarray  # H×W, H×W×3 (RGB) or F×H×W / F×H×W×3 float32
    spacing: tuple[float, ...] | None
    units: str
    colour: bool
    frames: int


def read_image(path: Path, *, multiframe: str = "reject") -> DicomImage:
    """One DICOM file → modality values (colour stays RGB, greyscale goes through the modality LUT).

    ``multiframe``: ``reject`` (a 2D image is expected), ``accept`` (a volume: frames × H × W).
    """
    ds = read_dataset(path)
    frames = n_frames(ds)
    if frames > 1 and multiframe == "reject":
        raise InputProblem(
            f"{path.name} is a multi-frame image ({tag_name('NumberOfFrames')} = {frames}) where a single "
            f"2D image is expected",
            path,
        )
    stored = decode(ds, path)
    colour = is_colour(ds)
    if frames > 1 and stored.ndim == (3 if colour else 2):  # one frame decoded for a multi-frame file
        stored = stored[None]
    if frames == 1 and stored.ndim == (4 if colour else 3):
        stored = stored[0]
    if colour:
        pixels = np.asarray(stored, dtype=np.float32)
    else:
        try:
            pixels = modality_values(stored, ds)
        except InputProblem:
            raise
        except Exception as exc:
            raise InputProblem(f"{path.name}: modality LUT cannot be applied: {_short(exc)}", path) from exc
    sp = pixel_spacing(ds)
    spacing: tuple[float, ...] | None = sp
    if frames > 1 and sp is not None:
        gap = frame_spacing(ds)
        spacing = (gap if gap is not None else float("nan"), *sp)
    return DicomImage(pixels=pixels, spacing=spacing, units=units_of(ds) if not colour else "raw", colour=colour, frames=frames)
