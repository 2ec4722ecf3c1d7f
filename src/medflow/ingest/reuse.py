"""Incremental image ingest: reuse the samples of the previous ingest file whose sources are unchanged.

Snakemake deletes a job's outputs before it runs, so the previous output cannot be read from its own
path. After every successful image ingest (with reuse on) a hard link to the finished file is kept
beside it under a hidden name, ``.{modality}.previous.h5`` (no extra disk space; it survives the
deletion of the output). The next ingest opens it read-only and copies, chunk by chunk and without
decompressing, every sample whose *source fingerprint* (see :func:`fingerprints`) is unchanged, as
long as the *settings fingerprint* (spec, compression, ingest stage version, medflow version) is the
same; everything else is decoded as usual. Stored chunks are the exact bytes a fresh conversion
would write (same encoder, same settings), so the output equals a full re-conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import medflow
from medflow.ingest.pixels import Task
from medflow.io import volume_files
from medflow.io.hashing import sha256_json
from medflow.stages import STAGE_VERSIONS

log = logging.getLogger(__name__)

#: bump when the way fingerprints are computed changes (it is part of the settings fingerprint)
FINGERPRINT_SCHEME = 1
#: spec keys that never change a sample's stored arrays: slice labels are re-attached (by SOP
#: Instance UID, from the current labels file) to reused samples too; the observation window only
#: decides which samples are converted at all (before reuse is looked up)
_SPEC_KEYS_NOT_IN_ARRAYS = ("slice_labels", "window_hours")


class PreviousUnreadable(Exception):
    """Reading the previous ingest file failed part-way: the caller converts everything instead."""


def previous_path(out_path: Path) -> Path:
    """``results/s/ingest/ct.h5`` → ``results/s/ingest/.ct.previous.h5``."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.stem}.previous{out_path.suffix}")


def settings_fingerprint(spec: dict, compression: str, level: int) -> str:
    """What, besides the source files, decides the stored arrays of a sample. A mismatch with the
    previous file disables reuse entirely."""
    payload = {
        "scheme": FINGERPRINT_SCHEME,
        "spec": {k: v for k, v in spec.items() if k not in _SPEC_KEYS_NOT_IN_ARRAYS},
        "compression": compression,
        "level": int(level) if compression == "gzip" else 0,
        "stage": STAGE_VERSIONS["ingest"],
        "medflow": medflow.__version__,  # decoding code may change without a stage bump in development
    }
    return sha256_json(payload)


# ------------------------------------------------------------------------------------- fingerprints
# A sample's source fingerprint is a sha256 of its manifest cell and, for every file of its source
# (the file itself, or every file under a series folder, hidden ones included: a superset of what
# the readers use can only cause a needless re-decode, never a stale reuse), the relative path, the
# size and the modification time in ns. No file content is read: hashing the bytes would cost about
# as much I/O as decoding them (uncompressed DICOM decoding is mostly reading), which is the very
# work reuse avoids. size + mtime_ns is what make, rsync and Snakemake trust; it misses only a
# rewrite that keeps the exact size *and* forges or preserves the nanosecond mtime (e.g. `cp -p` of
# a different file of the same size over the old one). Whoever does that must delete the hidden
# ``.{modality}.previous.h5`` (or turn reuse off) to force a full conversion.


def _listing(path: Path, label: str) -> str | None:
    try:
        st = path.stat()
        lines = []
        if stat.S_ISDIR(st.st_mode):
            for dirpath, _dirs, files in os.walk(path, onerror=_raise):
                for name in files:
                    p = os.path.join(dirpath, name)
                    s = os.stat(p)
                    lines.append(f"{os.path.relpath(p, path)}\t{s.st_size}\t{s.st_mtime_ns}")
            lines.sort()
        else:
            lines.append(f".\t{st.st_size}\t{st.st_mtime_ns}")
    except OSError:
        return None  # missing or unreadable: never reused (the decode reports the problem)
    return "\n".join([label, *lines])


def _raise(exc: OSError) -> None:
    raise exc


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _task_fingerprints(task: Task, root: Path) -> list[str]:
    """One fingerprint per sample of ``task`` ("" where the source cannot be listed)."""
    main = _listing(Path(task.path), task.cell)
    if main is None:
        return [""] * len(task.order)
    if task.kind == "patches":  # the container as a whole: a rewritten container re-decodes all its rows
        return [_digest(main, f"#{r}") for r in task.rows]
    parts = [main, *_data_files(Path(task.path))]
    if task.mask:
        mask = _listing(Path(task.mask), "mask " + os.path.relpath(task.mask, root))
        if mask is None:
            return [""]
        parts += [mask, *_data_files(Path(task.mask))]
    return [_digest(*parts)]


def _data_files(path: Path) -> list[str]:
    """The listing of the data file a detached header (.mhd, .nhdr) names: a rewritten .raw re-decodes."""
    return [_listing(data, "data " + data.name) or "missing" for data in volume_files.companion_files(path)]


def fingerprints(tasks: list[Task], root: Path) -> dict[int, str]:
    """Manifest position → source fingerprint of every sample of ``tasks``. Only file metadata is
    read; a few threads hide the latency of network file systems (stat releases the GIL)."""
    if len(tasks) > 16:
        with ThreadPoolExecutor(max_workers=8) as pool:
            per_task = list(pool.map(lambda t: _task_fingerprints(t, root), tasks))
    else:
        per_task = [_task_fingerprints(t, root) for t in tasks]
    return {o: fp for t, fps in zip(tasks, per_task, strict=True) for o, fp in zip(t.order, fps, strict=True)}


# ------------------------------------------------------------------------------------ previous file


@dataclass
class Reused:
    """What one reused sample contributes besides its chunks (copied straight into the sink)."""

    spacing: tuple[float, ...]
    units: str
    z: np.ndarray | None = None
    sop_instance_uids: list[str] | None = None


@dataclass
class Previous:
    """The index of a previous ingest file; :meth:`open` it (after the worker pool forked) to copy."""

    path: Path
    kind: str
    rows: dict[str, int]  # source fingerprint → row (sample) in the previous file
    spacing: np.ndarray
    units: list[str]
    datasets: tuple[str, ...]  # the per-sample chunked datasets: images (+ masks)
    offsets: np.ndarray | None = None
    z: np.ndarray | None = None
    uids: list[str] | None = None
    f: h5py.File | None = field(default=None, repr=False)

    def open(self) -> None:
        try:
            self.f = h5py.File(self.path, "r")
        except Exception as exc:
            raise PreviousUnreadable(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def copy(self, row: int, sink: Any) -> Reused:
        """Append sample ``row``'s stored chunks to ``sink`` (an H5Sink) as they are."""
        if self.f is None:
            self.open()
        a, b = (int(self.offsets[row]), int(self.offsets[row + 1])) if self.offsets is not None else (row, row + 1)
        try:
            chunks = {}
            for name in self.datasets:
                ds = self.f[name]
                zeros = (0,) * (ds.ndim - 1)
                chunks[name] = [ds.id.read_direct_chunk((j, *zeros)) for j in range(a, b)]
        except Exception as exc:
            raise PreviousUnreadable(f"{self.path}: reading sample {row}: {type(exc).__name__}: {exc}") from exc
        for name, items in chunks.items():
            sink.append(name, items)
        out = Reused(tuple(float(v) for v in self.spacing[row]), self.units[row])
        if self.offsets is not None:
            out.z, out.sop_instance_uids = self.z[a:b], self.uids[a:b]
        return out


def load_previous(path: Path, settings: str, kind: str, item_shape: list[int], dtype: Any, with_mask: bool) -> Previous | None:
    """The index of the previous ingest file at ``path`` if it exists and was written with the same
    settings; None otherwise (an unreadable or inconsistent file is logged as a warning and ignored)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            found = f.attrs.get("settings_fingerprint")
            if found is None:
                log.info("%s: the previous ingest file has no settings fingerprint; converting every sample", path.name)
                return None
            if str(found) != settings:
                log.info("%s: the modality's settings changed since the previous ingest; converting every sample", path.name)
                return None
            prev = _read_index(f, path, kind, item_shape, dtype, with_mask)
    except Exception as exc:  # corrupt, truncated, not HDF5, inconsistent: ignore it
        log.warning("%s: the previous ingest file is unusable (%s: %s); converting every sample",
                    path, type(exc).__name__, exc)
        return None
    return prev


def _read_index(f: h5py.File, path: Path, kind: str, item_shape: list[int], dtype: Any, with_mask: bool) -> Previous:
    def check(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(what)

    check(str(f.attrs.get("kind")) == kind, f"kind {f.attrs.get('kind')!r}, expected {kind!r}")
    n = len(f["sample_id"])
    fps = f["source_fingerprint"].asstr()[()].tolist()
    units = f["sample_units"].asstr()[()].tolist()
    spacing = f["spacing"][()]
    check(len(fps) == n and len(units) == n and spacing.shape[0] == n, "per-sample datasets disagree in length")
    datasets = ("images", "masks") if with_mask else ("images",)
    check(with_mask == ("masks" in f), "masks present/absent unlike the spec")
    offsets = z = uids = None
    rows_total = n
    if kind == "slices":
        offsets = f["offsets"][()].astype(np.int64)
        check(len(offsets) == n + 1 and offsets[0] == 0 and bool(np.all(np.diff(offsets) >= 0)), "bad offsets")
        rows_total = int(offsets[-1])
        z = f["z"][()]
        uids = f["sop_instance_uid"].asstr()[()].tolist()
        check(len(z) == rows_total and len(uids) == rows_total, "per-slice datasets disagree in length")
    for name in datasets:
        ds = f[name]
        want = np.dtype(dtype) if name == "images" else np.dtype(np.uint8)
        check(ds.shape == (rows_total, *item_shape), f"{name} has shape {ds.shape}")
        check(ds.dtype == want and ds.chunks == (1, *item_shape), f"{name} dtype/chunks differ")
    rows: dict[str, int] = {}
    for i, fp in enumerate(fps):
        if fp:
            rows.setdefault(fp, i)
    return Previous(path, kind, rows, spacing, units, datasets, offsets, z, uids)


def keep_previous(out_path: Path) -> None:
    """Hard-link the finished ``out_path`` to its hidden previous name (atomically replaced). Where the
    file system refuses hard links, reuse is off for the next run (a copy would double the disk use)."""
    out_path = Path(out_path)
    prev = previous_path(out_path)
    tmp = prev.with_name(f"{prev.name}.partial-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.link(out_path, tmp)
        os.replace(tmp, prev)
    except OSError as exc:
        log.info("%s: cannot hard-link the output for the next ingest to reuse (%s); the next ingest converts "
                 "every sample", out_path.name, exc)
        tmp.unlink(missing_ok=True)
        drop_previous(out_path)


def drop_previous(out_path: Path) -> None:
    with contextlib.suppress(OSError):
        previous_path(out_path).unlink(missing_ok=True)
