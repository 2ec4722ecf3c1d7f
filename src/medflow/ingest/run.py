"""``ingest_modality``: one modality of a validated manifest → its HDF5/parquet file + problems.csv."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from medflow.ingest import reuse
from medflow.ingest.convert import ConvertSettings, convert_images
from medflow.ingest.h5out import check_compression
from medflow.ingest.summary import IngestSummary, fail_on_problems, nothing_usable
from medflow.ingest.tables import TABLE_READERS, table_cell
from medflow.io.atomic import atomic_path
from medflow.problems import BadInputError, InputProblem, Problem, write_problems
from medflow.study import IMAGE_KINDS, TABLE_KINDS

log = logging.getLogger(__name__)

KINDS = (*IMAGE_KINDS, *TABLE_KINDS)


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
        settings = ConvertSettings(
            modality, spec, threads=max(int(threads), 1), on_bad_input=on_bad_input, compression=compression,
            level=int(compression_level), source_hash=source_hash, progress=progress,
            name_inputs_in_logs=name_inputs_in_logs,
        )
        summary = _ingest_image_kind(manifest, cohort_root, out_path, problems_path, settings, reuse_previous)
    if summary.n_ok == 0:
        out_path.unlink(missing_ok=True)  # an empty output must not look current to the next run
        nothing_usable(modality, summary, problems_path)
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


def _ingest_table_kind(
    manifest: pd.DataFrame, root: Path, modality: str, spec: dict, out_path: Path, problems_path: Path, on_bad_input: str,
    name_inputs_in_logs: bool,
) -> IngestSummary:
    kind = spec["kind"]
    t0 = time.perf_counter()
    try:
        frame, problems, n_missing = TABLE_READERS[kind](manifest, root, modality, spec)
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
        fail_on_problems(problems, problems_path, modality)
    with atomic_path(out_path) as tmp:
        frame.to_parquet(tmp, index=False)
    n_ok = int(frame["sample_id"].nunique()) if len(frame) else 0
    return IngestSummary(
        modality, kind, n_ok=n_ok, n_problems=len(problems), n_missing=n_missing,
        seconds_decode=t1 - t0, seconds_write=time.perf_counter() - t1,
    )


def _ingest_image_kind(
    manifest: pd.DataFrame, root: Path, out_path: Path, problems_path: Path, settings: ConvertSettings,
    reuse_previous: bool,
) -> IngestSummary:
    if not reuse_previous:
        reuse.drop_previous(out_path)
        return convert_images(manifest, root, out_path, problems_path, settings, None)
    previous = reuse.load_previous(
        reuse.previous_path(out_path), settings.fingerprint, settings.kind, settings.item_shape, settings.dtype,
        with_mask=settings.with_mask,
    )
    try:
        summary = convert_images(manifest, root, out_path, problems_path, settings, previous)
    except reuse.PreviousUnreadable as exc:  # the partial output is gone (atomic_path): start again
        log.warning("%s: the previous ingest file failed part-way (%s); converting every sample", settings.modality, exc)
        summary = convert_images(manifest, root, out_path, problems_path, settings, None)
    finally:
        if previous is not None:
            previous.close()
    reuse.keep_previous(out_path)
    return summary
