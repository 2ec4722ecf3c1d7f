"""Read DICOM files: single images, multi-frame volumes and series sorted by patient position.

Only pixels and geometry leave this module (no names, ids, dates or institutions: no PHI).
Every way a file can be unusable raises :class:`~medflow.problems.InputProblem` with a reason that
names the file and, where one is at fault, the DICOM tag, so that ingest can list it in
``{modality}.problems.csv``.

Rules (docs/contracts.md): pixel values go through the modality LUT (RescaleSlope/Intercept or a
Modality LUT Sequence) so CT is HU; MONOCHROME1 is inverted (larger = brighter); colour becomes RGB;
a series is sorted by ImagePositionPatient projected on the slice normal, and rejected when its
slices disagree in Rows/Columns/PixelSpacing/orientation, share a position or leave a gap.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medflow.problems import InputProblem

# Transfer syntaxes whose pixel data is plain little-endian samples (read without a decoder).
_NATIVE_LE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Tolerances of the series checks.
_ORIENTATION_TOL = 1e-4
_SPACING_TOL = 1e-3  # mm
_DUPLICATE_TOL = 1e-3  # mm: two slices closer than this share a position
_GAP_REL, _GAP_ABS = 0.01, 0.01  # a gap may differ from the median by 1 % + 0.01 mm


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
    return _mask_unused_bits(arr, bits, stored, signed)


def _mask_unused_bits(arr: np.ndarray, bits: int, stored: int, signed: bool) -> np.ndarray:
    """What pydicom does with BitsStored < BitsAllocated: clear the high bits, or sign-extend."""
    if stored >= bits:
        return arr
    if signed:
        shift = bits - stored
        return (arr << shift) >> shift
    return arr & np.array((1 << stored) - 1, dtype=arr.dtype)


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


# ------------------------------------------------------------------------------------- lean native reader

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_MODALITY_LUT_SEQ = 0x00283000
# (tag, keyword, kind): kind "us" = unsigned short, "ds" = decimal strings, "is" = integer string, "str" = text
_WANTED = {
    0x00080018: ("SOPInstanceUID", "str"),
    0x00080060: ("Modality", "str"),
    0x0020000E: ("SeriesInstanceUID", "str"),
    0x00200032: ("ImagePositionPatient", "ds"),
    0x00200037: ("ImageOrientationPatient", "ds"),
    0x00280002: ("SamplesPerPixel", "us"),
    0x00280004: ("PhotometricInterpretation", "str"),
    0x00280008: ("NumberOfFrames", "is"),
    0x00280010: ("Rows", "us"),
    0x00280011: ("Columns", "us"),
    0x00280030: ("PixelSpacing", "ds"),
    0x00280100: ("BitsAllocated", "us"),
    0x00280101: ("BitsStored", "us"),
    0x00280103: ("PixelRepresentation", "us"),
    0x00281052: ("RescaleIntercept", "ds"),
    0x00281053: ("RescaleSlope", "ds"),
    0x00281054: ("RescaleType", "str"),
}


# One read buffer per process, reused for every slice (see read_native).
_READ_BUFFER = bytearray()


class Header(dict):
    """The few header values the lean reader decodes, by keyword; quacks like a Dataset for
    ``get``/``in``/attribute access in this module's helpers."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Unsupported(Exception):
    """The lean reader does not handle this file; pydicom reads it instead."""


def _element_header(buf: bytes, pos: int, explicit: bool) -> tuple[int, int, int]:
    """(tag, value length, header size) of the element at ``pos``."""
    group, elem = struct.unpack_from("<HH", buf, pos)
    tag = (group << 16) | elem
    if tag in (_ITEM, _ITEM_END, _SEQ_END) or not explicit:
        return tag, struct.unpack_from("<I", buf, pos + 4)[0], 8
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr in _LONG_VRS:
        return tag, struct.unpack_from("<I", buf, pos + 8)[0], 12
    return tag, struct.unpack_from("<H", buf, pos + 6)[0], 8


def _skip_undefined(buf: bytes | bytearray, pos: int, n: int, explicit: bool, depth: int = 0) -> int:
    """Position after an undefined-length sequence whose items start at ``pos`` (file ends at ``n``)."""
    if depth > 16:
        raise _Unsupported
    while pos + 8 <= n:
        tag, length, hdr = _element_header(buf, pos, explicit)
        pos += hdr
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _Unsupported
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an undefined-length item: elements until the item delimiter
            if pos + 8 > n:
                raise _Unsupported
            tag, length, hdr = _element_header(buf, pos, explicit)
            pos += hdr
            if tag == _ITEM_END:
                break
            if length == _UNDEFINED:
                if explicit and bytes(buf[pos - hdr + 4 : pos - hdr + 6]) != b"SQ":
                    raise _Unsupported
                pos = _skip_undefined(buf, pos, n, explicit, depth + 1)
            else:
                pos += length
            if pos > n:
                raise _Unsupported
    raise _Unsupported


def _value(raw: bytes, kind: str) -> Any:
    if kind == "us":
        return struct.unpack_from("<H", raw)[0] if len(raw) >= 2 else None
    text = raw.decode("ascii", "strict").strip("\x00 ")
    if kind == "str":
        return text
    if kind == "is":
        return int(text) if text else None
    if not text:
        return None
    values = [float(v) for v in text.split("\\")]
    return values[0] if len(values) == 1 else values


def read_native(path: Path, buffer: bytearray | None = None) -> tuple[np.ndarray, Header] | None:
    """Fast path for the common CT/MR slice: Explicit/Implicit VR Little Endian, one greyscale frame
    of 8/16-bit samples, PixelData as the file's last top-level element content.

    Returns (stored pixels, the header values it needs) exactly as ``dcmread(path).pixel_array``
    would give them, or None when the file is anything else (then pydicom reads it).

    With ``buffer`` the file is read into it (grown when too small) and the pixels are a view of it:
    use them before the next call. Reusing one buffer avoids fresh page-faulted memory per file,
    which on these machines costs more than the parsing.
    """
    try:
        with open(path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if buffer is None:
                buf: bytes | bytearray = fh.readall()
                n = len(buf)
            else:
                if len(buffer) < size + 1:
                    try:
                        buffer.extend(bytes(size + 1 - len(buffer) + (1 << 16)))
                    except BufferError:  # still exported by a caller: read into fresh memory
                        buffer = bytearray(size + 1)
                n = fh.readinto(buffer)
                buf = buffer
    except OSError:
        return None
    if n < 144 or buf[128:132] != b"DICM":
        return None
    try:
        pos, ts = 132, None
        while pos + 8 <= n:
            group = struct.unpack_from("<H", buf, pos)[0]
            if group != 0x0002:
                break
            tag, length, hdr = _element_header(buf, pos, True)
            if tag == 0x00020010:
                ts = buf[pos + hdr : pos + hdr + length].decode("ascii").strip("\x00 ")
            pos += hdr + length
        if ts not in (_EXPLICIT_LE, _IMPLICIT_LE):
            return None
        explicit = ts == _EXPLICIT_LE
        header = Header()
        pixel = None
        while pos + 8 <= n:
            tag, length, hdr = _element_header(buf, pos, explicit)
            start = pos + hdr
            if start > n:
                return None
            if tag == _PIXEL_DATA:
                if length == _UNDEFINED:
                    return None
                pixel = (start, length)
                break
            if tag == _MODALITY_LUT_SEQ:
                return None
            if length == _UNDEFINED:
                if explicit and bytes(buf[pos + 4 : pos + 6]) != b"SQ":
                    return None
                pos = _skip_undefined(buf, start, n, explicit)
                continue
            wanted = _WANTED.get(tag)
            if wanted is not None:
                header[wanted[0]] = _value(buf[start : start + length], wanted[1])
            pos = start + length
        if pixel is None:
            return None
        rows, cols = header.get("Rows"), header.get("Columns")
        bits = header.get("BitsAllocated")
        stored = header.get("BitsStored") or bits
        signed = header.get("PixelRepresentation") == 1
        if (
            not rows or not cols or bits not in (8, 16) or (header.get("SamplesPerPixel") or 1) != 1
            or (header.get("NumberOfFrames") or 1) != 1
            or header.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2")
        ):
            return None
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        count = rows * cols
        if pixel[1] < count * dtype.itemsize or pixel[0] + count * dtype.itemsize > n:
            return None  # truncated: pydicom gives the detailed reason
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=pixel[0]).reshape(rows, cols)
        arr = _mask_unused_bits(arr, bits, stored, signed)
        header.setdefault("Modality", "")
        return arr, header
    except (_Unsupported, struct.error, UnicodeDecodeError, ValueError, TypeError, IndexError):
        return None


# ----------------------------------------------------------------------------------------------- series


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
    import time

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
