"""A lean DICOM parser for the common CT/MR slice, used instead of pydicom where it can be.

It reads only Explicit/Implicit VR Little Endian files holding one greyscale frame of 8/16-bit
samples, and decodes just the header values the series reader needs (no names, ids or dates);
for anything else it returns None and :mod:`medflow.io.dicom_read` reads the file with pydicom.
Neither pydicom nor a decoder is imported here.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

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


class Header(dict):
    """The few header values the lean reader decodes, by keyword; quacks like a Dataset for
    ``get``/``in``/attribute access in the helpers of :mod:`medflow.io.dicom_read`."""

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
        arr = mask_unused_bits(arr, bits, stored, signed)
        header.setdefault("Modality", "")
        return arr, header
    except (_Unsupported, struct.error, UnicodeDecodeError, ValueError, TypeError, IndexError):
        return None


def mask_unused_bits(arr: np.ndarray, bits: int, stored: int, signed: bool) -> np.ndarray:
    """What pydicom does with BitsStored < BitsAllocated: clear the high bits, or sign-extend."""
    if stored >= bits:
        return arr
    if signed:
        shift = bits - stored
        return (arr << shift) >> shift
    return arr & np.array((1 << stored) - 1, dtype=arr.dtype)
