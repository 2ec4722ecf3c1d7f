"""Read 2D images (PNG/JPEG/TIFF/BMP/DICOM), volumes (DICOM series or folder, .npy/.npz, and
NIfTI/NRRD/MetaImage through :mod:`medflow.io.volume_files`, whose docstring states the one array
orientation of every volume) and ``container.hdf5#row`` references, and resize them.

Readers raise :class:`~medflow.problems.InputProblem` with a reason a user can act on.
Resizing: area averaging when shrinking and bilinear when enlarging for 2D (OpenCV), separable
linear (align-corners=False, as ``torch.nn.functional.interpolate``) for volumes, nearest neighbour
for masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medflow.io import dicom_masks, dicom_read, dicom_series, volume_files
from medflow.problems import InputProblem

CONTAINER_SEP = "#"
NUMPY_SUFFIXES = {".npy", ".npz"}
# Rows of a container read at once (a window of the sorted references).
_WINDOW_ROWS = 1024
# Keys tried, in order, in an .npz holding several arrays.
NPZ_KEYS = ("image", "volume", "data", "arr_0")
MASK_NPZ_KEYS = ("mask", "label", "seg", "arr_0")


@dataclass
class Image2D:
    pixels: np.ndarray  # float32 H×W, or 3×H×W when channels=3
    spacing: tuple[float, float] | None  # (row, column) mm after resize; None when unknown


@dataclass
class Volume:
    pixels: np.ndarray  # float32 D×H×W (uint8 for a mask read by read_mask_volume)
    spacing: tuple[float, float, float] | None  # (slice, row, column) mm
    units: str
    origin: tuple[float, float, float] | None = None  # LPS mm of voxel [0, 0, 0]; None when unknown
    direction: tuple[tuple[float, float, float], ...] | None = None  # LPS unit vector of each array axis

    @property
    def geometry(self) -> tuple:
        """(shape, spacing, origin, direction), as :func:`volume_files.mask_mismatch` compares them."""
        return self.pixels.shape, self.spacing, self.origin, self.direction


# ------------------------------------------------------------------------------------------- resize


def set_single_thread() -> None:
    """Keep OpenCV to one thread (process pools give each worker one core)."""
    cv2.setNumThreads(1)


def resize2d(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """H×W (or H×W×C) float32 → size[0]×size[1]: area mean when shrinking, bilinear when enlarging."""
    h, w = int(size[0]), int(size[1])
    if arr.shape[:2] == (h, w):
        return arr
    src = np.ascontiguousarray(arr, dtype=np.float32)
    shrink = h <= arr.shape[0] and w <= arr.shape[1]
    out = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def resize2d_int(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8/uint16/int16 H×W → size, same dtype (area mean rounded when shrinking, bilinear when enlarging)."""
    h, w = int(size[0]), int(size[1])
    if arr.shape[:2] == (h, w):
        return np.array(arr)
    shrink = h <= arr.shape[0] and w <= arr.shape[1]
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _axis_weights(m: int, n: int) -> tuple:
    """Source indices (i0, i1), float32 weights of linear m → n (align-corners=False), and the
    selections of i0 and i1 (:func:`_selection`), worked out once per axis."""
    x = (np.arange(n, dtype=np.float64) + 0.5) * (m / n) - 0.5
    x = np.clip(x, 0, m - 1)
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, m - 1)
    return i0, i1, (x - i0).astype(np.float32), _selection(i0), _selection(i1)


def _linear_axis(arr: np.ndarray, axis: int, weights: tuple | None, out: np.ndarray | None = None) -> np.ndarray:
    """Resize ``arr`` along ``axis`` with :func:`_axis_weights` (None: that axis keeps its size)."""
    if weights is None:
        return arr
    _, _, wt, s0, s1 = weights
    shape = [1] * arr.ndim
    shape[axis] = len(wt)
    a0 = _pick(arr, axis, s0)
    a1 = _pick(arr, axis, s1)
    # a0 + (a1 - a0) * wt, in place, in float32: an integer ``arr`` is cast on the fly (exactly as
    # astype(float32) would), so its float32 copy is never made
    out = np.subtract(a1, a0, out=out, dtype=np.float32)
    out *= wt.reshape(shape)
    np.add(out, a0, out=out, dtype=np.float32)
    return out


def _selection(idx: np.ndarray) -> slice | np.ndarray:
    """A slice where ``idx`` is evenly spaced (a strided view, no copy), else ``idx`` itself."""
    if len(idx) > 1:
        step = int(idx[1] - idx[0])
        if step > 0 and np.all(np.diff(idx) == step):
            return slice(int(idx[0]), int(idx[-1]) + 1, step)
    return idx


def _pick(arr: np.ndarray, axis: int, sel: slice | np.ndarray) -> np.ndarray:
    """``np.take(arr, idx, axis)`` for ``sel = _selection(idx)``."""
    if isinstance(sel, slice):
        return arr[(slice(None),) * axis + (sel,)]
    return np.take(arr, sel, axis=axis)


def resize3d_linear(vol: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """D×H×W → size (trilinear, align-corners=False; no anti-aliasing, like torch's interpolate),
    float32: linear along the slices, then the rows, then the columns.

    Computed one output slice at a time (its two source slices, then its rows and columns, in
    cache) rather than axis by axis over the whole volume; the same float32 operations in the same
    order, so the same array. An integer ``vol`` gives the array its float32 copy would (it is cast
    on the fly, never copied whole).
    """
    src = vol if vol.dtype.kind in "iub" else np.asarray(vol, dtype=np.float32)
    weights = [None if m == int(n) else _axis_weights(m, int(n)) for m, n in zip(src.shape, size, strict=True)]
    out = np.empty(tuple(int(n) for n in size), dtype=np.float32)
    rows = np.empty((out.shape[1], src.shape[2]), dtype=np.float32) if weights[2] is not None else None
    for k in range(out.shape[0]):
        if weights[0] is None:
            plane = src[k]
        else:
            i0, i1, wt = (w[k] for w in weights[0][:3])
            plane = np.subtract(src[i1], src[i0], dtype=np.float32)
            plane *= wt
            np.add(plane, src[i0], out=plane, dtype=np.float32)
        if weights[2] is None:
            if weights[1] is None:
                out[k] = plane
            else:
                _linear_axis(plane, 0, weights[1], out=out[k])
        else:
            _linear_axis(_linear_axis(plane, 0, weights[1], out=rows if weights[1] is not None else None), 1,
                         weights[2], out=out[k])
    return out


def resize_nearest(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest neighbour over every axis (pixel centres; labels stay labels)."""
    index = []
    for m, n in zip(arr.shape, size, strict=True):
        idx = np.minimum(((np.arange(int(n)) + 0.5) * (m / int(n))).astype(np.intp), m - 1)
        index.append(idx)
    return np.ascontiguousarray(arr[np.ix_(*index)])


def scaled_spacing(spacing: Sequence[float] | None, before: Sequence[int], after: Sequence[int]) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    return tuple(float(s) * b / a for s, b, a in zip(spacing, before, after, strict=True))


# ------------------------------------------------------------------------------------------ 2D images


def _looks_like_dicom(path: Path) -> bool:
    return dicom_read.is_dicom_file(path) or path.suffix.lower() in (".dcm", ".dicom", ".dic", ".ima")


def _pil_pixels(path: Path) -> np.ndarray:
    """Pixels of a PNG/JPEG/TIFF/BMP as float32 H×W (grey) or H×W×3 (colour)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                raise InputProblem(f"{path.name} holds {frames} frames where a single 2D image is expected", path)
            img.load()
            mode = img.mode
            if mode in ("P", "PA"):
                img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
                mode = img.mode
            if mode in ("1", "L", "LA"):
                arr = np.asarray(img.convert("L"))
            elif mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                arr = np.asarray(img)
            elif mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                arr = np.asarray(img.convert("RGB"))
            else:
                arr = np.asarray(img.convert("RGB"))
    except InputProblem:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputProblem(
            f"{path.name} cannot be read as an image ({path.suffix or 'no extension'}): {type(exc).__name__}: {exc}",
            path,
        ) from exc
    return arr.astype(np.float32)


def _to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """H×W or H×W×3 → H×W (luminance, ITU-R BT.601) or 3×H×W."""
    if channels == 3:
        rgb = arr if arr.ndim == 3 else np.repeat(arr[:, :, None], 3, axis=2)
        return np.ascontiguousarray(np.moveaxis(rgb[:, :, :3], 2, 0), dtype=np.float32)
    if arr.ndim == 3:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.ascontiguousarray(arr[:, :, :3] @ weights, dtype=np.float32)
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_image_2d(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None, str]:
    """A 2D image file → (float32 H×W or H×W×3 RGB, spacing or None, units) before resizing."""
    path = Path(path)
    if not path.is_file():
        raise InputProblem(
            f"{path} is a folder, a 2D image file is expected" if path.is_dir() else f"file not found: {path}", path
        )
    spacing: tuple[float, ...] | None = None
    units = "raw"
    if _looks_like_dicom(path):
        img = dicom_read.read_image(path, multiframe="reject")
        arr, spacing, units = img.pixels, img.spacing, img.units
    elif path.suffix.lower() in NUMPY_SUFFIXES:
        arr = _load_numpy(path, NPZ_KEYS).astype(np.float32)
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
            raise InputProblem(f"{path.name} holds an array of shape {arr.shape}, a 2D image is expected", path)
    else:
        arr = _pil_pixels(path)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        raise InputProblem(f"{path.name}: unexpected image shape {arr.shape}", path)
    if arr.ndim == 3:
        arr = arr[:, :, :3]
    if arr.size == 0:
        raise InputProblem(f"{path.name} holds an empty image ({arr.shape})", path)
    if not np.all(np.isfinite(arr)):
        raise InputProblem(f"{path.name} contains NaN or infinite pixel values", path)
    return arr, spacing, units


def finish_2d(arr: np.ndarray, spacing: tuple[float, ...] | None, size: Sequence[int] | None, channels: int) -> Image2D:
    """Resize (area/bilinear) and convert to ``channels`` (1: luminance, 3: RGB first)."""
    if size is not None:
        before = arr.shape[:2]
        arr = resize2d(arr, size)
        spacing = scaled_spacing(spacing, before, size)
    return Image2D(pixels=_to_channels(arr, channels), spacing=spacing)


# -------------------------------------------------------------------------------------------- volumes


def _load_numpy(path: Path, keys: Sequence[str]) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputProblem(f"{path.name} cannot be read as a NumPy file: {exc}", path) from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if len(names) == 1:
                arr = loaded[names[0]]
            else:
                key = next((k for k in keys if k in names), None)
                if key is None:
                    raise InputProblem(
                        f"{path.name} holds arrays {', '.join(names)}; name the one to use {' or '.join(keys[:2])}", path
                    )
                arr = loaded[key]
    else:
        arr = loaded
    if arr.dtype.kind not in "biuf":
        raise InputProblem(f"{path.name}: array dtype {arr.dtype} is not numeric", path)
    return np.asarray(arr)


def _dicom_volume(path: Path) -> Volume:
    """A series folder, a folder holding one multi-frame file, or one (multi-frame) DICOM file."""
    if path.is_dir():
        files = dicom_series.series_files(path)
        if len(files) == 1:
            return _dicom_volume(files[0])
        series = dicom_series.read_series(path, lambda stored, ds: dicom_read.modality_values(stored, ds))
        vol = np.stack([s.pixels for s in series.slices]).astype(np.float32)
        origin, direction = volume_files.series_geometry(series)
        vol, spacing, origin, direction = volume_files.to_convention(vol, series.spacing, origin, direction)
        return Volume(pixels=vol, spacing=spacing, units=series.units, origin=origin, direction=direction)
    img = dicom_read.read_image(path, multiframe="accept")
    arr = img.pixels
    if img.colour:
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    spacing = img.spacing
    if spacing is not None and len(spacing) == 2:
        spacing = (float("nan"), *spacing)
    return Volume(pixels=np.ascontiguousarray(arr, dtype=np.float32), spacing=spacing, units=img.units)


def _file_volume(path: Path, *, mask: bool = False, keep_integers: bool = False) -> Volume:
    arr, spacing, origin, direction = volume_files.read_file(path, mask=mask, keep_integers=keep_integers)
    arr, spacing, origin, direction = volume_files.to_convention(arr, spacing, origin, direction)
    return Volume(pixels=arr, spacing=spacing, units="raw", origin=origin, direction=direction)


def read_volume(path: Path, *, keep_integers: bool = False) -> Volume:
    """A volume (D×H×W float32, before resizing) from a DICOM series/multi-frame file, a NIfTI/NRRD/
    MetaImage file or .npy/.npz, with the geometry it carries (none for .npy/.npz), in the orientation
    of :mod:`medflow.io.volume_files`. ``keep_integers``: a file or array stored as integers keeps its
    integer type (for :func:`resize3d_linear`, which gives the same float32 array from it)."""
    path = Path(path)
    if not path.exists():
        raise InputProblem(f"file not found: {path}", path)
    if path.is_file() and volume_files.file_format(path):
        return _file_volume(path, keep_integers=keep_integers)
    if path.is_file() and path.suffix.lower() in NUMPY_SUFFIXES:
        arr = _load_numpy(path, NPZ_KEYS)
        if arr.ndim != 3:
            raise InputProblem(f"{path.name} holds an array of shape {arr.shape}, a D×H×W volume is expected", path)
        vol = arr if keep_integers and arr.dtype.kind in "iub" else arr.astype(np.float32)
        if not np.all(np.isfinite(vol)):
            raise InputProblem(f"{path.name} contains NaN or infinite values", path)
        return Volume(pixels=vol, spacing=None, units="raw")
    if path.is_dir() or _looks_like_dicom(path):
        return _dicom_volume(path)
    raise InputProblem(
        f"{path.name}: a volume must be a DICOM series folder, a DICOM file, a NIfTI (.nii, .nii.gz), NRRD "
        f"(.nrrd), MetaImage (.mha, .mhd) file or a .npy/.npz array",
        path,
    )


def read_mask(path: Path) -> np.ndarray:
    """A label mask (.npy/.npz, NIfTI/NRRD/MetaImage or DICOM) as uint8; values must be integers in 0..255."""
    return read_mask_volume(path).pixels


def read_mask_volume(path: Path, *, image: Path | None = None, roi: str | None = None) -> Volume:
    """:func:`read_mask` with the geometry the mask file carries (none for .npy/.npz). A DICOM
    RTSTRUCT or SEG is drawn on ``image`` (its series folder), ROIs/segments matching ``roi``
    (:mod:`medflow.io.dicom_masks`)."""
    path = Path(path)
    if not path.exists():
        raise InputProblem(f"mask file not found: {path}", path)
    if path.is_file() and (kind := dicom_masks.kind_of(path)):
        arr, spacing, origin, direction = dicom_masks.read_mask(path, kind, image, roi)
        return Volume(pixels=arr, spacing=spacing, units="raw", origin=origin, direction=direction)
    if path.is_file() and path.suffix.lower() in NUMPY_SUFFIXES:
        vol = Volume(pixels=_load_numpy(path, MASK_NPZ_KEYS), spacing=None, units="raw")
    elif path.is_file() and volume_files.file_format(path):
        vol = _file_volume(path, mask=True)
    else:
        vol = read_volume(path)
    vol.pixels = _mask_labels(vol.pixels, path)
    return vol


def _mask_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.rint(arr)) or arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise InputProblem(
            f"mask {path.name} must hold integer labels 0..255 (found values in [{arr.min()}, {arr.max()}])", path
        )
    return arr.astype(np.uint8)


# --------------------------------------------------------------------------------- container references


def read_container_rows(path: Path, rows: Sequence[int], dataset: str = "ct_slices") -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Read ``rows`` of ``dataset`` in an HDF5 container, opening it once and reading in row order.

    Returns (row → array, row → problem reason). A missing/unreadable container or dataset raises
    InputProblem (every reference into it fails).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputProblem(f"container not found: {path}", path)
    wanted = sorted(set(int(r) for r in rows))
    out: dict[int, np.ndarray] = {}
    bad: dict[int, str] = {}
    try:
        with h5py.File(path, "r") as f:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise InputProblem(f"{path.name} has no dataset {dataset!r} (found: {', '.join(list(f.keys())[:10])})", path)
            ds = f[dataset]
            n = ds.shape[0]
            valid = [r for r in wanted if r < n]
            for r in wanted:
                if r >= n:
                    bad[r] = f"row {r} is out of range: {path.name}:{dataset} has {n} rows"
            # sorted rows, read in contiguous windows (fast on chunked and contiguous layouts alike)
            i = 0
            while i < len(valid):
                lo = valid[i]
                j = i
                while j + 1 < len(valid) and valid[j + 1] < lo + _WINDOW_ROWS:
                    j += 1
                hi = valid[j] + 1
                block = ds[lo:hi]
                while i < len(valid) and valid[i] < hi:
                    out[valid[i]] = np.array(block[valid[i] - lo])
                    i += 1
    except InputProblem:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputProblem(f"container {path.name} cannot be read as HDF5: {exc}", path) from exc
    return out, bad
