"""The image kinds' conversion: one modality's samples → its HDF5 ingest file (docs/contracts.md).

The tasks (:mod:`medflow.ingest.tasks`) are decoded by the worker pool (:mod:`medflow.ingest.pool`);
this process writes their compressed chunks in manifest order, together with the samples copied
from the previous ingest file, then what the file records per sample and per file, and problems.csv.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

import medflow
from medflow.cohort.manifest import resolve_path
from medflow.ingest import reuse
from medflow.ingest.h5out import H5Sink, spool_read, utf8
from medflow.ingest.pixels import SampleResult
from medflow.ingest.pool import Runner, in_order
from medflow.ingest.summary import IngestSummary, fail_on_problems
from medflow.ingest.tasks import build_tasks, outside_window, split_bad_refs, take_reusable
from medflow.io.atomic import atomic_path
from medflow.logs import progress_bar
from medflow.problems import Problem, write_problems

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertSettings:
    """How the images of one modality are converted: its config ``spec`` and the run's options
    (see :func:`medflow.ingest.ingest_modality`)."""

    modality: str
    spec: dict[str, Any]
    threads: int
    on_bad_input: str
    compression: str
    level: int
    source_hash: str
    progress: bool
    name_inputs_in_logs: bool

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    @property
    def size(self) -> list[int]:
        return [int(s) for s in self.spec["size"]]

    @property
    def channels(self) -> int:
        return int(self.spec.get("channels", 1) or 1)

    @property
    def item_shape(self) -> list[int]:
        """The shape of one stored image (an RGB ``image`` keeps its channels first)."""
        return [3, *self.size] if self.kind == "image" and self.channels == 3 else self.size

    @property
    def dtype(self) -> type[np.generic]:
        return np.int16 if self.kind == "slices" else np.float32

    @property
    def with_mask(self) -> bool:
        return self.kind == "volume" and bool(self.spec.get("mask"))

    @property
    def fingerprint(self) -> str:
        """Everything besides the source files that decides the stored arrays."""
        return reuse.settings_fingerprint(self.spec, self.compression, self.level)


@dataclass
class _Written:
    """What the file records for each written sample besides its images, in file order."""

    ids: list[str] = field(default_factory=list)
    source_fingerprints: list[str] = field(default_factory=list)
    spacings: list[tuple[float, ...]] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])  # slice stacks: first slice of each sample
    z: list[np.ndarray] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    n_labelled: int = 0

    def add(self, r: SampleResult, source_fingerprint: str, kind: str, slice_labels: dict[tuple[str, str], int]) -> None:
        self.ids.append(r.sample_id)
        self.source_fingerprints.append(source_fingerprint)
        self.units.append(r.units)
        sp = r.spacing if r.spacing is not None else (np.nan,) * (3 if kind in ("volume", "slices") else 2)
        self.spacings.append(tuple(float(v) for v in sp))
        if kind == "slices":
            n = len(r.sop_instance_uids)
            self.offsets.append(self.offsets[-1] + n)
            self.z.append(r.z)
            self.uids.extend(r.sop_instance_uids)
            lab = np.array([slice_labels.get((r.sample_id, u), -1) for u in r.sop_instance_uids], dtype=np.int8)
            self.n_labelled += int((lab >= 0).sum())
            self.labels.append(lab)


def convert_images(
    manifest: pd.DataFrame, root: Path, out_path: Path, problems_path: Path, settings: ConvertSettings,
    previous: reuse.Previous | None,
) -> IngestSummary:
    """Write the images of ``settings.modality`` to ``out_path`` and its problems to ``problems_path``,
    copying from ``previous`` every sample whose sources it holds unchanged."""
    s = settings
    kind, modality, spec = s.kind, s.modality, s.spec
    size, item_shape = s.size, s.item_shape
    tasks, n_missing = build_tasks(manifest, root, modality, spec, s.compression, s.level)
    early = split_bad_refs(tasks)
    early += outside_window(tasks, manifest, modality, spec)
    tasks = [t for t in tasks if t.order]
    slice_labels, label_name = load_slice_labels(root, spec) if kind == "slices" else ({}, None)
    orders = [o for t in tasks for o in t.order] + [r.order for r in early]
    n_samples = len(orders)
    # Fingerprints are taken before any decoding: a file that changes meanwhile is re-decoded next time.
    source_fps = reuse.fingerprints(tasks, root)
    taken = take_reusable(tasks, source_fps, previous)
    tasks = [t for t in tasks if t.order]
    reused = [SampleResult(o, sid) for o, (_, sid) in taken.items()]
    reused_rows = {o: row for o, (row, _) in taken.items()}  # manifest position → row of the previous file

    summary = IngestSummary(modality, kind, 0, 0, n_missing, n_reused=len(reused))
    if previous is not None:
        log.info("%s: %d of %d sample(s) reused from the previous ingest, %d to convert",
                 modality, len(reused), n_samples, n_samples - len(reused))
    problems: list[Problem] = []
    written = _Written()
    runner = Runner(tasks, s.threads)  # the pool forks before the output file (and the previous one) is opened
    spool_buffer = bytearray()
    bar = progress_bar(total=n_samples - len(reused), desc=f"ingest {modality}", unit="sample", disable=not s.progress)
    try:
        with atomic_path(out_path) as tmp:
            with h5py.File(tmp, "w") as f:
                sink = H5Sink(f, s.compression, s.level)
                sink.create("images", item_shape, s.dtype)
                if s.with_mask:
                    sink.create("masks", size, np.uint8)
                if reused:
                    previous.open()
                for r in in_order(itertools.chain([early, reused], runner.results), orders):
                    row = reused_rows.get(r.order)
                    if row is not None:  # copy its stored chunks as they are, and what else it stored
                        t0, w0 = time.perf_counter(), sink.seconds
                        old = previous.copy(row, sink)
                        summary.seconds_reuse += time.perf_counter() - t0 - (sink.seconds - w0)
                        r.spacing, r.units, r.z, r.sop_instance_uids = old.spacing, old.units, old.z, old.sop_instance_uids
                    else:
                        bar.update(1)
                        for key in ("decode", "transform", "compress"):
                            setattr(summary, f"seconds_{key}", getattr(summary, f"seconds_{key}") + r.seconds.get(key, 0.0))
                    if r.problem is not None:
                        problems.append(r.problem)  # write_problems logs each one
                        continue
                    if row is not None:  # already in the sink
                        pass
                    elif r.spool_file is not None:
                        for name, chunks in spool_read(r.spool_file, r.chunks, spool_buffer).items():
                            sink.append(name, chunks)
                        # the views die here, so the buffer may grow on the next sample
                        chunks = None
                    else:
                        for name, chunks in r.chunks.items():
                            sink.append(name, chunks)
                    written.add(r, source_fps.get(r.order, ""), kind, slice_labels)
                summary.n_ok, summary.n_problems = len(written.ids), len(problems)
                _finish_h5(sink, s, written, label_name)
                write_problems(problems_path, problems, name_inputs_in_logs=s.name_inputs_in_logs)
                if problems and s.on_bad_input == "fail":
                    fail_on_problems(problems, problems_path, modality)
            summary.seconds_write = sink.seconds
    except BaseException:
        runner.close(ok=False)
        raise
    finally:
        bar.close()
    runner.close(ok=True)
    if kind == "slices":
        summary.n_slices = written.offsets[-1]
        if slice_labels:
            log.info("%s: %d of %d slices carry a %s label (by SOP Instance UID); %d label rows did not match a slice",
                     modality, written.n_labelled, written.offsets[-1], label_name, len(slice_labels) - written.n_labelled)
    return summary


def load_slice_labels(root: Path, spec: dict[str, Any]) -> tuple[dict[tuple[str, str], int], str | None]:
    """The ``slice_labels`` file of a slice stack: (sample id, SOP Instance UID) → label (-1 when
    empty), and the label's name; nothing when the spec names no file."""
    name = spec.get("slice_labels")
    if not name:
        return {}, None
    path = resolve_path(root, name)
    if not path.is_file():
        raise FileNotFoundError(f"slice_labels file {path} named in the config does not exist")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = [c for c in frame.columns if c not in ("sample_id", "sop_instance_uid")]
    if "sample_id" not in frame.columns or "sop_instance_uid" not in frame.columns or len(cols) != 1:
        raise ValueError(
            f"{path}: slice labels need columns sample_id, sop_instance_uid and one label column; found {list(frame.columns)}"
        )
    label = cols[0]
    values = pd.to_numeric(frame[label].str.strip(), errors="coerce")
    labels: dict[tuple[str, str], int] = {}
    for sid, uid, v in zip(frame["sample_id"].str.strip(), frame["sop_instance_uid"].str.strip(), values, strict=True):
        labels[(sid, uid)] = -1 if pd.isna(v) else int(v)
    return labels, label


def _finish_h5(sink: H5Sink, s: ConvertSettings, written: _Written, label_name: str | None) -> None:
    """The per-sample datasets and the file attributes, after the last image."""
    f = sink.f
    kind = s.kind
    sink.put("sample_id", utf8(written.ids))
    ndim = 3 if kind in ("volume", "slices") else 2
    sp = np.array(written.spacings, dtype=np.float32).reshape(len(written.ids), ndim)
    sink.put("spacing", sp)
    if kind == "slices":
        sink.put("offsets", np.array(written.offsets, dtype=np.int64))
        sink.put("z", np.concatenate(written.z).astype(np.float32) if written.z else np.zeros(0, np.float32))
        sink.put("slice_label", np.concatenate(written.labels).astype(np.int8) if written.labels else np.zeros(0, np.int8))
        sink.put("sop_instance_uid", utf8(written.uids))
        if label_name:
            f["slice_label"].attrs["label"] = label_name
    units = set(written.units)
    attrs = f.attrs
    attrs["modality"] = s.modality
    attrs["kind"] = kind
    attrs["units"] = units.pop() if len(units) == 1 else ("mixed" if units else "raw")
    attrs["size"] = np.array(s.size, dtype=np.int64)
    attrs["channels"] = s.channels
    if s.spec.get("window") is not None:
        attrs["window"] = np.array(s.spec["window"], dtype=np.float64)
    if len(sp) and np.all(np.isfinite(sp)) and np.allclose(sp, sp[0], rtol=1e-4, atol=1e-6):
        attrs["spacing"] = sp[0].astype(np.float64)
    attrs["compression"] = s.compression
    attrs["compression_level"] = s.level if s.compression == "gzip" else 0
    attrs["medflow_version"] = medflow.__version__
    attrs["source_hash"] = s.source_hash
    sink.put("source_fingerprint", utf8(written.source_fingerprints))
    sink.put("sample_units", utf8(written.units))
    attrs["settings_fingerprint"] = s.fingerprint
