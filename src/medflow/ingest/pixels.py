"""Per-sample work of the image kinds (image, patches, volume, slices), run in worker processes.

A task is a small picklable tuple; its result carries the already compressed chunks, the geometry
the outputs may keep (never header text: no PHI) and the seconds spent decoding, transforming and
compressing. Any InputProblem becomes a failed result naming the file and the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medflow.ingest.h5out import ChunkEncoder, spool_write
from medflow.io import dicom_read, dicom_series, images, volume_files
from medflow.problems import InputProblem, Problem


@dataclass
class Task:
    kind: str
    order: list[int]  # manifest positions of the samples
    sample_ids: list[str]
    path: str  # file, folder or container (patches)
    cell: str  # the manifest cell (for problem rows)
    spec: dict[str, Any]
    compression: str
    level: int
    mask: str | None = None  # volume: the mask file
    root: str | None = None  # the cohort root: folders below it may carry patient names (see privacy)
    spool: str | None = None  # pool mode: folder where the worker leaves the chunks (see h5out)
    rows: list[int] = field(default_factory=list)  # patches: container rows, one per sample


@dataclass
class SampleResult:
    order: int
    sample_id: str
    problem: Problem | None = None
    chunks: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    spacing: tuple[float, ...] | None = None
    units: str = "raw"
    z: np.ndarray | None = None
    sop_instance_uids: list[str] | None = None
    shape_before: tuple[int, ...] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    spool_file: str | None = None  # chunks are in this file; ``chunks`` then holds (mask, length)


_ENCODERS: dict[tuple[str, int], ChunkEncoder] = {}


def init_worker() -> None:
    """Pool initializer: one thread per worker process."""
    images.set_single_thread()


def _encoder(task: Task) -> ChunkEncoder:
    key = (task.compression, task.level)
    if key not in _ENCODERS:
        _ENCODERS[key] = ChunkEncoder(task.compression, task.level)
    return _ENCODERS[key]


def run_task(task: Task) -> list[SampleResult]:
    """Entry point of a worker: one task → one result per sample."""
    if task.kind == "patches":
        return _patches(task)
    fn = {"image": _image, "volume": _volume, "slices": _slices}[task.kind]
    sid, order = task.sample_ids[0], task.order[0]
    enc = _encoder(task)
    before = enc.seconds
    try:
        result = fn(task, enc)
    except InputProblem as exc:
        return [SampleResult(order, sid, problem=_problem(task, sid, exc.reason, exc.file))]
    except Exception as exc:  # an unexpected failure of one sample must not end the ingest
        reason = f"unexpected error while reading: {type(exc).__name__}: {exc}"
        return [SampleResult(order, sid, problem=_problem(task, sid, reason))]
    result.order, result.sample_id = order, sid
    if task.spool:
        result.spool_file, result.chunks = spool_write(task.spool, order, result.chunks)
    result.seconds["compress"] = enc.seconds - before
    return [result]


def _problem(task: Task, sample_id: str, reason: str, source: str | None = None, cell: str | None = None) -> Problem:
    """A problem row named by the manifest cell; the reason loses every path and file name, a file
    inside a series folder reading as its position there (so the user can still find it)."""
    labels = _series_positions(Path(task.path)) if task.kind == "slices" else {}
    return Problem.about(cell or task.cell, sample_id, reason, sources=(source, task.path, task.mask), root=task.root,
                         labels=labels)


def _series_positions(folder: Path) -> dict[str, str]:
    """Each file name of a series folder → its position there, which is how a reason names a slice."""
    try:
        names = [f.name for f in dicom_series.series_files(folder)]
    except InputProblem:
        return {}
    return {name: f"file {i} of {len(names)} of the series folder (in name order)" for i, name in enumerate(names, 1)}


def _image(task: Task, enc: ChunkEncoder) -> SampleResult:
    size, channels = task.spec["size"], int(task.spec.get("channels", 1) or 1)
    t0 = time.perf_counter()
    arr, spacing, units = images.load_image_2d(Path(task.path))
    t1 = time.perf_counter()
    img = images.finish_2d(arr, spacing, size, channels)
    t2 = time.perf_counter()
    chunk = enc.encode(img.pixels[None])
    return SampleResult(
        0, "", chunks={"images": [chunk]}, spacing=img.spacing, units=units,
        shape_before=tuple(arr.shape[:2]), seconds={"decode": t1 - t0, "transform": t2 - t1},
    )


def _volume(task: Task, enc: ChunkEncoder) -> SampleResult:
    size = [int(s) for s in task.spec["size"]]
    t0 = time.perf_counter()
    vol = images.read_volume(Path(task.path), keep_integers=True)  # resized straight from its integers
    mask_vol = (images.read_mask_volume(Path(task.mask), image=Path(task.path), roi=task.spec.get("mask_roi"))
                if task.mask else None)
    mask = None if mask_vol is None else mask_vol.pixels
    t1 = time.perf_counter()
    shape = vol.pixels.shape
    if mask is not None and mask.shape != shape:
        raise InputProblem(
            f"mask {Path(task.mask).name} has shape {mask.shape} but the image is {shape} (D×H×W before resizing)",
            task.mask,
        )
    if mask_vol is not None and (differs := volume_files.mask_mismatch(vol.geometry, mask_vol.geometry)):
        raise InputProblem(f"mask {Path(task.mask).name} does not lie on its image: {'; '.join(differs)}", task.mask)
    pixels = images.resize3d_linear(vol.pixels, size)
    chunks = {"images": []}
    spacing = images.scaled_spacing(vol.spacing, shape, size) if vol.spacing is not None else None
    if mask is not None:
        mask_small = images.resize_nearest(mask, size)
    t2 = time.perf_counter()
    chunks["images"].append(enc.encode(pixels[None]))
    if mask is not None:
        chunks["masks"] = [enc.encode(mask_small[None])]
    return SampleResult(
        0, "", chunks=chunks, spacing=spacing, units=vol.units, shape_before=tuple(shape),
        seconds={"decode": t1 - t0, "transform": t2 - t1},
    )


def hu_slice(size: tuple[int, int]):
    """Per-slice transform of ``slices``: stored values → resized int16 HU.

    With a linear modality LUT the resize runs on the stored values and the rescale after it (area
    averaging and a linear map commute), on a quarter of the pixels for 512 → 256. With slope 1 and
    an integer intercept (nearly every CT) the area mean is taken on the integer pixels directly
    (OpenCV rounds each mean half up, np.rint would round ties to even: at most 1 HU apart at exact
    ties); otherwise in float32.
    """

    def transform(stored: np.ndarray, ds) -> np.ndarray:
        if dicom_read.has_linear_rescale(ds) and ds.get("PhotometricInterpretation") != "MONOCHROME1":
            slope, intercept = dicom_read.rescale(ds)
            if slope == 1.0 and intercept == int(intercept) and stored.dtype in _CV_INT:
                small = images.resize2d_int(stored, size).astype(np.int32)
                small += int(intercept)
                np.clip(small, -32768, 32767, out=small)
                return small.astype(np.int16)
            small = images.resize2d(stored.astype(np.float32), size)
            if slope != 1.0:
                small *= np.float32(slope)
            small += np.float32(intercept)
        else:
            small = images.resize2d(dicom_read.modality_values(stored, ds), size)
        np.rint(small, out=small)
        np.clip(small, -32768, 32767, out=small)
        return small.astype(np.int16)

    return transform


_CV_INT = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16))


def _slices(task: Task, enc: ChunkEncoder) -> SampleResult:
    size = (int(task.spec["size"][0]), int(task.spec["size"][1]))
    folder = Path(task.path)
    if folder.is_file():
        raise InputProblem(f"{folder.name} is a file; kind 'slices' expects a DICOM series folder", folder)
    series = dicom_series.read_series(folder, hu_slice(size))
    chunks = [enc.encode(s.pixels[None]) for s in series.slices]
    before = series.slices[0].shape
    spacing = (series.spacing[0], *images.scaled_spacing(series.spacing[1:], before, size))
    return SampleResult(
        0, "", chunks={"images": chunks}, spacing=spacing, units=series.units, z=series.z.astype(np.float32),
        sop_instance_uids=series.sop_instance_uids, shape_before=before,
        seconds={"decode": series.seconds_decode, "transform": series.seconds_transform},
    )


def _patches(task: Task) -> list[SampleResult]:
    """One container: read every referenced row once (sorted), then resize and encode each."""
    enc = _encoder(task)
    size = task.spec["size"]
    dataset = task.spec.get("dataset", "ct_slices")
    t0 = time.perf_counter()
    try:
        arrays, bad = images.read_container_rows(Path(task.path), task.rows, dataset)
    except InputProblem as exc:
        return [
            SampleResult(o, s, problem=_problem(task, s, exc.reason, exc.file, cell=c))
            for o, s, c in zip(task.order, task.sample_ids, _cells(task), strict=True)
        ]
    t1 = time.perf_counter()
    out = []
    for o, sid, row, cell in zip(task.order, task.sample_ids, task.rows, _cells(task), strict=True):
        if row in bad:
            out.append(SampleResult(o, sid, problem=_problem(task, sid, bad[row], cell=cell)))
            continue
        arr = np.asarray(arrays[row], dtype=np.float32)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            out.append(SampleResult(o, sid, problem=Problem(cell, sid, f"row {row} has shape {arr.shape}, a 2D patch is expected")))
            continue
        if not np.all(np.isfinite(arr)):
            out.append(SampleResult(o, sid, problem=Problem(cell, sid, f"row {row} contains NaN or infinite values")))
            continue
        ta = time.perf_counter()
        small = images.resize2d(arr, size)
        tb = time.perf_counter()
        before = enc.seconds
        chunk = enc.encode(np.ascontiguousarray(small, dtype=np.float32)[None])
        out.append(
            SampleResult(
                o, sid, chunks={"images": [chunk]}, units=task.spec.get("units", "HU"), shape_before=arr.shape,
                seconds={"decode": (t1 - t0) / max(len(task.rows), 1), "transform": tb - ta, "compress": enc.seconds - before},
            )
        )
    return out


def _cells(task: Task) -> list[str]:
    return [f"{task.cell}#{r}" for r in task.rows]
