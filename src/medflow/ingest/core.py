"""``ingest_modality``: one modality of a validated manifest → its HDF5/parquet file + problems.csv."""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

import medflow
from medflow.ingest import pixels, reuse
from medflow.ingest.h5out import H5Sink, check_compression, spool_dir, spool_read, utf8
from medflow.ingest.pixels import IMAGE_KINDS, SampleResult, Task
from medflow.ingest.tables import TABLE_KINDS, table_cell
from medflow.io.atomic import atomic_path
from medflow.io.images import CONTAINER_SEP
from medflow.logs import progress_bar
from medflow.problems import BadInputError, InputProblem, Problem, read_problems, write_problems

log = logging.getLogger(__name__)

KINDS = (*IMAGE_KINDS, *TABLE_KINDS)


@dataclass
class IngestSummary:
    """What one ingest did. Seconds: decode/transform/compress are summed over workers (CPU time of
    the per-sample work), write is the parent's HDF5/parquet I/O, wall is the elapsed time."""

    modality: str
    kind: str
    n_ok: int
    n_problems: int
    n_missing: int
    n_slices: int = 0
    n_reused: int = 0  # of n_ok: copied from the previous ingest file instead of decoded
    seconds_decode: float = 0.0
    seconds_transform: float = 0.0
    seconds_compress: float = 0.0
    seconds_write: float = 0.0
    seconds_reuse: float = 0.0  # reading reused samples from the previous file (their writing is in write)
    seconds_wall: float = 0.0

    @property
    def seconds(self) -> dict[str, float]:
        return {
            "decode": self.seconds_decode,
            "transform": self.seconds_transform,
            "compress": self.seconds_compress,
            "write": self.seconds_write,
            "reuse": self.seconds_reuse,
            "wall": self.seconds_wall,
        }


def ingest_modality(
    manifest: pd.DataFrame,
    cohort_root: Path,
    modality: str,
    spec: dict,
    out_path: Path,
    problems_path: Path,
    *,
    threads: int = 1,
    on_bad_input: str = "skip",
    compression: str = "gzip",
    compression_level: int = 1,
    source_hash: str = "",
    progress: bool = True,
    reuse_previous: bool = False,
    name_inputs_in_logs: bool = False,
) -> IngestSummary:
    """Ingest ``modality`` of ``manifest`` (paths relative to ``cohort_root``) into ``out_path``.

    Image kinds write HDF5 (``.h5``), table kinds parquet. Every sample that fails becomes a row of
    ``problems_path`` (always written) and is left out; ``on_bad_input="fail"`` raises BadInputError
    after writing the problems, and leaves no output file. A modality with nothing usable (a table
    file without its key column, every image unreadable) raises BadInputError under either setting:
    skipping it would only fail much later, with a less helpful message.

    ``name_inputs_in_logs``: the log names problem files by their manifest cell (else by sample id).

    ``reuse_previous`` (image kinds): copy the samples whose source files and conversion settings are
    unchanged from the previous ingest (kept as a hard link ``.{modality}.previous.h5`` beside
    ``out_path``, see medflow.ingest.reuse) instead of decoding them, and keep that link to this run's
    output afterwards. The output is the same as without it. Off: the link is neither read nor kept.
    """
    t_start = time.perf_counter()
    kind = spec["kind"]
    if kind not in KINDS:
        raise ValueError(f"modality {modality!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if on_bad_input not in ("skip", "fail"):
        raise ValueError(f"on_bad_input must be 'skip' or 'fail', not {on_bad_input!r}")
    cohort_root, out_path, problems_path = Path(cohort_root), Path(out_path), Path(problems_path)
    if on_bad_input == "fail" and out_path.exists():
        out_path.unlink()  # a failed run must not leave an earlier output looking current
    if kind in TABLE_KINDS:
        summary = _ingest_table_kind(
            manifest, cohort_root, modality, spec, out_path, problems_path, on_bad_input, name_inputs_in_logs
        )
    else:
        check_compression(compression, compression_level)
        summary = _ingest_image_kind(
            manifest, cohort_root, modality, spec, out_path, problems_path,
            threads=max(int(threads), 1), on_bad_input=on_bad_input, compression=compression,
            level=int(compression_level), source_hash=source_hash, progress=progress, reuse_previous=reuse_previous,
            name_inputs_in_logs=name_inputs_in_logs,
        )
    if summary.n_ok == 0:
        out_path.unlink(missing_ok=True)  # an empty output must not look current to the next run
        _nothing_usable(modality, summary, problems_path)
    summary.seconds_wall = time.perf_counter() - t_start
    log.info(
        "%s (%s): %d ingested%s, %d problem(s), %d missing%s in %.1f s (decode %.1f s, transform %.1f s, "
        "compress %.1f s summed over workers; write %.1f s)",
        modality, kind, summary.n_ok,
        f" ({summary.n_reused} reused from the previous ingest, {summary.n_ok - summary.n_reused} converted)"
        if reuse_previous and kind in IMAGE_KINDS else "",
        summary.n_problems, summary.n_missing,
        f", {summary.n_slices} slices" if kind == "slices" else "", summary.seconds_wall,
        summary.seconds_decode, summary.seconds_transform, summary.seconds_compress, summary.seconds_write,
    )
    return summary


def _fail(problems: list[Problem], problems_path: Path, modality: str) -> None:
    first = problems[0]
    raise BadInputError(
        f"{modality}: {len(problems)} input problem(s) and on_bad_input is 'fail'; see {problems_path} "
        f"(first: sample {first.sample_id or '-'}: {first.reason})"
    )


def _nothing_usable(modality: str, summary: IngestSummary, problems_path: Path) -> None:
    problems = read_problems(problems_path)
    first = f"; first: {problems[0].reason}" if problems else ""
    raise BadInputError(
        f"{modality}: no sample could be used ({summary.n_problems} problem(s), {summary.n_missing} empty "
        f"manifest cell(s)){first}. Every model needing {modality} would have no data, so the run stops here "
        f"(on_bad_input: skip leaves out single files, not a whole modality); see {problems_path}"
    )


# ---------------------------------------------------------------------------------------------- tables


def _ingest_table_kind(
    manifest: pd.DataFrame, root: Path, modality: str, spec: dict, out_path: Path, problems_path: Path, on_bad_input: str,
    name_inputs_in_logs: bool,
) -> IngestSummary:
    kind = spec["kind"]
    t0 = time.perf_counter()
    try:
        frame, problems, n_missing = TABLE_KINDS[kind](manifest, root, modality, spec)
    except InputProblem as exc:  # the whole file is unusable: stop now, naming it and what it lacks
        cell = table_cell(modality, spec)
        problem = Problem.about(cell, "", exc.reason, sources=(exc.file,), root=root)
        write_problems(problems_path, [problem], name_inputs_in_logs=name_inputs_in_logs)
        raise BadInputError(
            f"{modality}: the {kind} file {cell!r} (config key modalities.{modality}.file) cannot be used: "
            f"{problem.reason}. Every sample would lack {modality}, so the run stops here; fix the file and rerun"
        ) from None
    t1 = time.perf_counter()
    write_problems(problems_path, problems, name_inputs_in_logs=name_inputs_in_logs)
    if problems and on_bad_input == "fail":
        _fail(problems, problems_path, modality)
    with atomic_path(out_path) as tmp:
        frame.to_parquet(tmp, index=False)
    n_ok = int(frame["sample_id"].nunique()) if len(frame) else 0
    return IngestSummary(
        modality, kind, n_ok=n_ok, n_problems=len(problems), n_missing=n_missing,
        seconds_decode=t1 - t0, seconds_write=time.perf_counter() - t1,
    )


# ---------------------------------------------------------------------------------------------- images


def _cell(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _resolve(root: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else root / p


def build_tasks(
    manifest: pd.DataFrame, root: Path, modality: str, spec: dict, compression: str, level: int
) -> tuple[list[Task], int]:
    """One task per sample (per container for ``patches``) and the number of empty cells."""
    kind = spec["kind"]
    if modality not in manifest.columns:
        raise ValueError(f"the manifest has no column {modality!r} for modality {modality!r}")
    mask_col = spec.get("mask") if kind == "volume" else None
    if mask_col and mask_col not in manifest.columns:
        raise ValueError(f"the manifest has no mask column {mask_col!r} (modality {modality!r})")
    light = {k: spec[k] for k in ("size", "channels", "dataset", "units") if k in spec}
    tasks: list[Task] = []
    containers: dict[str, Task] = {}
    missing = 0
    ids = manifest["sample_id"].astype(str).tolist()
    masks = manifest[mask_col].tolist() if mask_col else [None] * len(ids)
    for i, (sid, value, mask) in enumerate(zip(ids, manifest[modality].tolist(), masks, strict=True)):
        cell = _cell(value)
        if cell is None:
            missing += 1
            continue
        if kind == "patches":
            file_part, sep, row = cell.rpartition(CONTAINER_SEP)
            if not sep:
                file_part, row = cell, "<none>"
            path = str(_resolve(root, file_part))
            task = containers.get(path)
            if task is None:
                task = containers[path] = Task(kind, [], [], path, file_part, light, compression, level, root=str(root))
                tasks.append(task)
            try:
                r = int(row)
            except ValueError:
                r = -1
            task.order.append(i)
            task.sample_ids.append(sid)
            task.rows.append(r)
            continue
        mask_cell = _cell(mask)
        tasks.append(
            Task(kind, [i], [sid], str(_resolve(root, cell)), cell, light, compression, level,
                 mask=str(_resolve(root, mask_cell)) if mask_cell else None, root=str(root))
        )
    return tasks, missing


def _split_bad_refs(tasks: list[Task]) -> list[SampleResult]:
    """Patches references whose row is not a non-negative integer are problems before any reading."""
    bad: list[SampleResult] = []
    for t in tasks:
        if t.kind != "patches":
            continue
        keep = [j for j, r in enumerate(t.rows) if r >= 0]
        for j in range(len(t.rows)):
            if t.rows[j] < 0:
                bad.append(SampleResult(t.order[j], t.sample_ids[j], problem=Problem(
                    t.cell, t.sample_ids[j],
                    "the cell is not a container reference 'file.hdf5#row' with a non-negative integer row")))
        t.order, t.sample_ids, t.rows = ([t.order[j] for j in keep], [t.sample_ids[j] for j in keep], [t.rows[j] for j in keep])
    return bad


def _outside_window(tasks: list[Task], manifest: pd.DataFrame, modality: str, spec: dict) -> list[SampleResult]:
    """Images acquired outside the study's observation window ``[0, window_hours]`` h (manifest column
    ``{modality}_hours``), or at an unknown time, are taken out of ``tasks`` and become problems, so
    that downstream they miss this modality like any failed file. Nothing is taken without a window;
    without the column nothing can be checked (a warning: load_manifest records it in cohort.json)."""
    from medflow.config import time_column

    window = spec.get("window_hours")
    if window is None:
        return []
    window = float(window)
    col = time_column(modality)
    if col not in manifest.columns:
        log.warning(
            "%s: the manifest has no column %r: medflow cannot verify that these images lie inside the "
            "observation window of %g h", modality, col, window,
        )
        return []
    hours = pd.to_numeric(manifest[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    out: list[SampleResult] = []
    for t in tasks:
        keep = []
        for j, (o, sid) in enumerate(zip(t.order, t.sample_ids, strict=True)):
            h = hours[o]
            if np.isnan(h):
                reason = (
                    f"the acquisition time is unknown (column {col!r} is empty), so the image cannot be checked "
                    f"against the observation window of {window:g} h; fill in the hours since admission it was taken at"
                )
            elif h < 0:
                reason = f"taken {-h:g} h before admission, outside the observation window [0, {window:g}] h"
            elif h > window:
                reason = f"taken {h:g} h after admission, outside the observation window of {window:g} h"
            else:
                keep.append(j)
                continue
            out.append(SampleResult(o, sid, problem=Problem(t.cell, sid, reason)))
        if len(keep) < len(t.order):
            t.order, t.sample_ids = [t.order[j] for j in keep], [t.sample_ids[j] for j in keep]
            if t.kind == "patches":
                t.rows = [t.rows[j] for j in keep]
    if out:
        log.info("%s: %d image(s) acquired outside the observation window [0, %g] h or at an unknown time left out",
                 modality, len(out), window)
    return out


class _Runner:
    """Results task by task (completion order; ``_in_order`` restores manifest order).

    threads=1: everything in this process (no pool start-up, no pickling). threads=N>1: a forked
    pool of N-1 workers *plus this process*, which takes a task itself whenever the pool has enough
    queued and no result is waiting to be written (tasks are handed out in manifest order, so
    results wait in ``_in_order`` only briefly); so N cores decode and this process also does all
    the HDF5 writing, instead of N workers fighting the writer for N cores. Pool workers leave
    their chunks in a RAM spool folder (see h5out) instead of pickling them through pipes.
    """

    def __init__(self, tasks: list[Task], threads: int) -> None:
        self.tasks = tasks
        self.pool = None
        self.spool: str | None = None
        pixels.init_worker()
        self.workers = min(threads, len(tasks)) - 1
        if self.workers >= 1:
            self.spool = spool_dir()
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            self.pool = ctx.Pool(self.workers, initializer=pixels.init_worker)
        self.results: Iterator[list[SampleResult]] = self._results()

    def _results(self) -> Iterator[list[SampleResult]]:
        if self.pool is None:
            for t in self.tasks:
                yield pixels.run_task(t)
            return
        pending: deque = deque()
        waiting = deque(self.tasks)
        # Two queued tasks per worker keep the pool busy while this process works on a task of its
        # own; towards the end the pool gets no more than half of what is left, so that this
        # process is not left idle waiting on a long queue of the pool's.
        depth = 2 * self.workers + 2
        while waiting or pending:
            while waiting and len(pending) < min(depth, max(1, len(waiting) * self.workers // (self.workers + 1))):
                task = waiting.popleft()
                task.spool = self.spool if task.kind != "patches" else None
                pending.append(self.pool.apply_async(pixels.run_task, (task,)))
            done = [r for r in pending if r.ready()]
            for r in done:
                pending.remove(r)
                yield r.get()
            if done:
                continue
            if waiting:  # the pool is busy: this process takes the next task itself
                task = waiting.popleft()
                task.spool = None
                yield pixels.run_task(task)
            else:
                yield pending.popleft().get()

    def close(self, ok: bool) -> None:
        if self.pool is not None:
            if ok:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
            self.pool = None
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None


def _in_order(batches: Iterable[list[SampleResult]], orders: list[int]) -> Iterator[SampleResult]:
    """Re-emit results in manifest order (patch containers may finish samples out of order)."""
    expected = sorted(orders)
    pending: dict[int, SampleResult] = {}
    k = 0
    for batch in batches:
        for r in batch:
            pending[r.order] = r
        while k < len(expected) and expected[k] in pending:
            yield pending.pop(expected[k])
            k += 1
    yield from (pending[o] for o in sorted(pending))


def _load_slice_labels(root: Path, spec: dict) -> tuple[dict[tuple[str, str], int], str | None]:
    name = spec.get("slice_labels")
    if not name:
        return {}, None
    path = _resolve(root, name)
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


def _item_shape(kind: str, size: list[int], channels: int) -> list[int]:
    return [3, *size] if kind == "image" and channels == 3 else list(size)


def _ingest_image_kind(
    manifest: pd.DataFrame, root: Path, modality: str, spec: dict, out_path: Path, problems_path: Path, *,
    threads: int, on_bad_input: str, compression: str, level: int, source_hash: str, progress: bool,
    reuse_previous: bool, name_inputs_in_logs: bool,
) -> IngestSummary:
    kind = spec["kind"]
    settings = reuse.settings_fingerprint(spec, compression, level)
    convert = functools.partial(
        _convert_images, manifest, root, modality, spec, out_path, problems_path, threads=threads,
        on_bad_input=on_bad_input, compression=compression, level=level, source_hash=source_hash,
        progress=progress, settings=settings, name_inputs_in_logs=name_inputs_in_logs,
    )
    if not reuse_previous:
        reuse.drop_previous(out_path)
        return convert(None)
    size = [int(s) for s in spec["size"]]
    item = _item_shape(kind, size, int(spec.get("channels", 1) or 1))
    dtype = np.int16 if kind == "slices" else np.float32
    previous = reuse.load_previous(
        reuse.previous_path(out_path), settings, kind, item, dtype, with_mask=kind == "volume" and bool(spec.get("mask"))
    )
    try:
        summary = convert(previous)
    except reuse.PreviousUnreadable as exc:  # the partial output is gone (atomic_path): start again
        log.warning("%s: the previous ingest file failed part-way (%s); converting every sample", modality, exc)
        summary = convert(None)
    finally:
        if previous is not None:
            previous.close()
    reuse.keep_previous(out_path)
    return summary


def _convert_images(
    manifest: pd.DataFrame, root: Path, modality: str, spec: dict, out_path: Path, problems_path: Path,
    previous: reuse.Previous | None, *, threads: int, on_bad_input: str, compression: str, level: int,
    source_hash: str, progress: bool, settings: str, name_inputs_in_logs: bool,
) -> IngestSummary:
    kind = spec["kind"]
    size = [int(s) for s in spec["size"]]
    channels = int(spec.get("channels", 1) or 1)
    tasks, n_missing = build_tasks(manifest, root, modality, spec, compression, level)
    early = _split_bad_refs(tasks)
    early += _outside_window(tasks, manifest, modality, spec)
    tasks = [t for t in tasks if t.order]
    slice_labels, label_name = _load_slice_labels(root, spec) if kind == "slices" else ({}, None)
    orders = [o for t in tasks for o in t.order] + [r.order for r in early]
    n_samples = len(orders)
    # Fingerprints are taken before any decoding: a file that changes meanwhile is re-decoded next time.
    source_fps = reuse.fingerprints(tasks, root)
    taken = _take_reusable(tasks, source_fps, previous)
    tasks = [t for t in tasks if t.order]
    reused = [SampleResult(o, sid) for o, (_, sid) in taken.items()]
    reused_rows = {o: row for o, (row, _) in taken.items()}  # manifest position → row of the previous file

    summary = IngestSummary(modality, kind, 0, 0, n_missing, n_reused=len(reused))
    if previous is not None:
        log.info("%s: %d of %d sample(s) reused from the previous ingest, %d to convert",
                 modality, len(reused), n_samples, n_samples - len(reused))
    problems: list[Problem] = []
    ids: list[str] = []
    fps: list[str] = []
    spacings: list[tuple[float, ...]] = []
    sample_units: list[str] = []
    offsets = [0]
    z: list[np.ndarray] = []
    uids: list[str] = []
    labels: list[np.ndarray] = []
    n_labelled = 0
    item = _item_shape(kind, size, channels)
    dtype = np.int16 if kind == "slices" else np.float32
    runner = _Runner(tasks, threads)  # the pool forks before the output file (and the previous one) is opened
    spool_buffer = bytearray()
    bar = progress_bar(total=n_samples - len(reused), desc=f"ingest {modality}", unit="sample", disable=not progress)
    try:
        with atomic_path(out_path) as tmp:
            with h5py.File(tmp, "w") as f:
                sink = H5Sink(f, compression, level)
                sink.create("images", item, dtype)
                if kind == "volume" and spec.get("mask"):
                    sink.create("masks", size, np.uint8)
                if reused:
                    previous.open()
                for r in _in_order(_chain([early, reused], runner.results), orders):
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
                    ids.append(r.sample_id)
                    fps.append(source_fps.get(r.order, ""))
                    sample_units.append(r.units)
                    sp = r.spacing if r.spacing is not None else (np.nan,) * (3 if kind in ("volume", "slices") else 2)
                    spacings.append(tuple(float(v) for v in sp))
                    if kind == "slices":
                        n = len(r.sop_instance_uids)
                        offsets.append(offsets[-1] + n)
                        z.append(r.z)
                        uids.extend(r.sop_instance_uids)
                        lab = np.array([slice_labels.get((r.sample_id, u), -1) for u in r.sop_instance_uids], dtype=np.int8)
                        n_labelled += int((lab >= 0).sum())
                        labels.append(lab)
                summary.n_ok, summary.n_problems = len(ids), len(problems)
                _finish_h5(
                    sink, kind, modality, spec, size, ids, spacings, sample_units, offsets, z, uids, labels, label_name,
                    compression, level, source_hash,
                )
                sink.put("source_fingerprint", utf8(fps))
                sink.put("sample_units", utf8(sample_units))
                f.attrs["settings_fingerprint"] = settings
                write_problems(problems_path, problems, name_inputs_in_logs=name_inputs_in_logs)
                if problems and on_bad_input == "fail":
                    _fail(problems, problems_path, modality)
            summary.seconds_write = sink.seconds
    except BaseException:
        runner.close(ok=False)
        raise
    finally:
        bar.close()
    runner.close(ok=True)
    if kind == "slices":
        summary.n_slices = offsets[-1]
        if slice_labels:
            log.info("%s: %d of %d slices carry a %s label (by SOP Instance UID); %d label rows did not match a slice",
                     modality, n_labelled, offsets[-1], label_name, len(slice_labels) - n_labelled)
    return summary


def _take_reusable(
    tasks: list[Task], source_fps: dict[int, str], previous: reuse.Previous | None
) -> dict[int, tuple[int, str]]:
    """Take the samples whose source fingerprint the previous file holds out of ``tasks``; return
    manifest position → (row in the previous file, sample id) for each of them."""
    if previous is None:
        return {}
    taken: dict[int, tuple[int, str]] = {}
    for t in tasks:
        keep = []
        for j, o in enumerate(t.order):
            fp = source_fps.get(o, "")
            row = previous.rows.get(fp) if fp else None
            if row is None:
                keep.append(j)
            else:
                taken[o] = (row, t.sample_ids[j])
        if len(keep) < len(t.order):
            t.order, t.sample_ids = [t.order[j] for j in keep], [t.sample_ids[j] for j in keep]
            if t.kind == "patches":
                t.rows = [t.rows[j] for j in keep]
    return taken


def _chain(first: list[list[SampleResult]], rest: Iterator[list[SampleResult]]) -> Iterator[list[SampleResult]]:
    yield from first
    yield from rest


def _finish_h5(
    sink: H5Sink, kind: str, modality: str, spec: dict, size: list[int], ids: list[str],
    spacings: list[tuple[float, ...]], sample_units: list[str], offsets: list[int], z: list[np.ndarray], uids: list[str],
    labels: list[np.ndarray], label_name: str | None, compression: str, level: int, source_hash: str,
) -> None:
    f = sink.f
    sink.put("sample_id", utf8(ids))
    ndim = 3 if kind in ("volume", "slices") else 2
    sp = np.array(spacings, dtype=np.float32).reshape(len(ids), ndim)
    sink.put("spacing", sp)
    if kind == "slices":
        sink.put("offsets", np.array(offsets, dtype=np.int64))
        sink.put("z", np.concatenate(z).astype(np.float32) if z else np.zeros(0, np.float32))
        sink.put("slice_label", np.concatenate(labels).astype(np.int8) if labels else np.zeros(0, np.int8))
        sink.put("sop_instance_uid", utf8(uids))
        if label_name:
            f["slice_label"].attrs["label"] = label_name
    units = set(sample_units)
    attrs = f.attrs
    attrs["modality"] = modality
    attrs["kind"] = kind
    attrs["units"] = units.pop() if len(units) == 1 else ("mixed" if units else "raw")
    attrs["size"] = np.array(size, dtype=np.int64)
    attrs["channels"] = int(spec.get("channels", 1) or 1)
    if spec.get("window") is not None:
        attrs["window"] = np.array(spec["window"], dtype=np.float64)
    if len(sp) and np.all(np.isfinite(sp)) and np.allclose(sp, sp[0], rtol=1e-4, atol=1e-6):
        attrs["spacing"] = sp[0].astype(np.float64)
    attrs["compression"] = compression
    attrs["compression_level"] = level if compression == "gzip" else 0
    attrs["medflow_version"] = medflow.__version__
    attrs["source_hash"] = source_hash
