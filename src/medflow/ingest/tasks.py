"""The manifest column of one image modality → the tasks the workers convert (one per sample, one
per container for ``patches``), and the samples taken out of them before any decoding: container
references without a valid row, images outside the study's observation window, and samples the
previous ingest file already holds (see :mod:`medflow.ingest.reuse`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medflow.cohort.manifest import resolve_path
from medflow.ingest.pixels import SampleResult, Task
from medflow.ingest.reuse import Previous
from medflow.io.images import CONTAINER_SEP
from medflow.problems import Problem

log = logging.getLogger(__name__)


def _cell(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


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
    light = {k: spec[k] for k in ("size", "channels", "dataset", "units", "mask_roi") if k in spec}
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
            path = str(resolve_path(root, file_part))
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
            Task(kind, [i], [sid], str(resolve_path(root, cell)), cell, light, compression, level,
                 mask=str(resolve_path(root, mask_cell)) if mask_cell else None, root=str(root))
        )
    return tasks, missing


def split_bad_refs(tasks: list[Task]) -> list[SampleResult]:
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


def outside_window(tasks: list[Task], manifest: pd.DataFrame, modality: str, spec: dict) -> list[SampleResult]:
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


def take_reusable(
    tasks: list[Task], source_fps: dict[int, str], previous: Previous | None
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
