"""Table kinds: ``table`` (one row per sample), ``events`` (long EHR CSV) and ``notes`` (text files)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medflow.cohort.manifest import resolve_path
from medflow.problems import InputProblem, Problem

log = logging.getLogger(__name__)

EVENT_COLUMNS = ("admission_id", "hours", "variable", "value")
NOTE_NAME = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)(?:_|$)")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputProblem("table file not found", path)
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputProblem(f"the table cannot be read as CSV: {exc}", path) from exc


def _typed(values: pd.Series) -> pd.Series:
    """Numbers → Int64 (all integral) or float64; anything else → category (stripped strings)."""
    text = values.astype("string").str.strip()
    empty = text.isna() | (text == "") | text.str.lower().isin(["nan", "na", "n/a", "null", "none"])
    text = text.mask(empty)
    numbers = pd.to_numeric(text, errors="coerce")
    if bool((numbers.notna() | empty).all()) and not bool(empty.all()):
        finite = numbers.dropna()
        if len(finite) and bool(np.all(np.isfinite(finite))) and bool((finite == np.round(finite)).all()) and bool(
            (finite.abs() < 2**53).all()
        ):
            return numbers.round().astype("Int64")
        return numbers.astype("float64")
    if bool(empty.all()):
        return pd.Series(np.nan, index=values.index, dtype="float64")
    return text.astype("category")


def table_cell(modality: str, spec: dict[str, Any]) -> str:
    """The table file as the config names it: what problem rows call it (never a path of this machine)."""
    return str(spec.get("file", f"{modality}.csv"))


def ingest_table(manifest: pd.DataFrame, root: Path, modality: str, spec: dict[str, Any]) -> tuple[pd.DataFrame, list[Problem], int]:
    """``table``: CSV keyed by sample_id → one typed row per manifest sample (manifest order)."""
    cell = table_cell(modality, spec)
    path = resolve_path(root, cell)
    frame = _read_csv(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    if "sample_id" not in frame.columns:
        raise InputProblem(f"the table has no 'sample_id' column (columns: {', '.join(frame.columns)})", path)
    problems: list[Problem] = []
    ids = frame["sample_id"].astype("string").str.strip().fillna("")
    frame["sample_id"] = ids
    known = set(manifest["sample_id"].astype(str))
    empty = ids == ""
    for i in np.flatnonzero(empty.to_numpy()):
        problems.append(Problem(cell, "", f"row {i + 2} of the table has an empty sample_id"))
    unknown = ~empty & ~ids.isin(known)
    for i in np.flatnonzero(unknown.to_numpy()):
        problems.append(Problem(cell, ids.iloc[i], f"row {i + 2}: sample_id {ids.iloc[i]!r} is not in the manifest"))
    dup = ~empty & ids.duplicated(keep=False)
    for sid in dict.fromkeys(ids[dup & ~unknown]):
        lines = ", ".join(str(i + 2) for i in np.flatnonzero((ids == sid).to_numpy()))
        problems.append(Problem(cell, sid, f"sample_id {sid!r} has several rows in the table (rows {lines}); keep one"))
    keep = frame[~empty & ~unknown & ~dup]
    have = set(keep["sample_id"])
    dup_ids = set(ids[dup])
    for sid in manifest["sample_id"].astype(str):
        if sid not in have and sid not in dup_ids:
            problems.append(Problem(cell, sid, f"sample {sid!r} of the manifest has no row in the table"))
    order = {sid: i for i, sid in enumerate(manifest["sample_id"].astype(str))}
    keep = keep.assign(_o=keep["sample_id"].map(order)).sort_values("_o").drop(columns="_o").reset_index(drop=True)
    out = pd.DataFrame({"sample_id": keep["sample_id"].astype("string")})
    for col in keep.columns:
        if col != "sample_id":
            out[col] = _typed(keep[col]).reset_index(drop=True)
    return out, problems, 0


def ingest_events(manifest: pd.DataFrame, root: Path, modality: str, spec: dict[str, Any]) -> tuple[pd.DataFrame, list[Problem], int]:
    """``events``: long CSV → ``sample_id, hours, variable, value, value_text`` within the window."""
    cell = table_cell(modality, spec)
    path = resolve_path(root, cell)
    frame = _read_csv(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in EVENT_COLUMNS if c not in frame.columns]
    if missing:
        raise InputProblem(
            f"the events table lacks column(s) {', '.join(missing)} (expected {', '.join(EVENT_COLUMNS)})", path
        )
    problems: list[Problem] = []
    ids = frame["admission_id"].astype("string").str.strip().fillna("")
    known = manifest["sample_id"].astype(str)
    unknown = (ids != "") & ~ids.isin(set(known))
    for sid, count in ids[unknown].value_counts(sort=False).items():
        problems.append(Problem(cell, str(sid), f"admission_id {sid!r} is not in the manifest ({count} event rows)"))
    hours = pd.to_numeric(frame["hours"].astype("string").str.strip(), errors="coerce")
    variable = frame["variable"].astype("string").str.strip()
    window = spec.get("window_hours")
    in_window = hours.ge(0) & (hours.le(float(window)) if window is not None else True)
    bad_row = (ids == "") | hours.isna() | variable.isna() | (variable == "")
    keep = ~unknown & ~bad_row & in_window.fillna(False)
    n_outside = int((~unknown & ~bad_row & ~in_window.fillna(False)).sum())
    n_bad = int((~unknown & bad_row).sum())
    log.info(
        "%s: kept %d of %d event rows; dropped %d outside [0, %s] h, %d with empty id/variable or unreadable hours, "
        "%d of unknown admissions",
        modality, int(keep.sum()), len(frame), n_outside, window, n_bad, int(unknown.sum()),
    )
    raw = frame.loc[keep, "value"].astype("string").str.strip()
    value = pd.to_numeric(raw, errors="coerce").astype("float64")
    text = raw.where(value.isna() & raw.notna() & (raw != ""))
    out = pd.DataFrame(
        {
            "sample_id": ids[keep].astype("string"),
            "hours": hours[keep].astype("float64"),
            "variable": variable[keep].astype("string"),
            "value": value,
            "value_text": text.astype("string"),
        }
    )
    order = {sid: i for i, sid in enumerate(known)}
    out = (
        out.assign(_o=out["sample_id"].map(order).astype("int64"))
        .sort_values(["_o", "hours"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )
    n_without = len(set(known) - set(out["sample_id"]))
    if n_without:
        log.info("%s: %d manifest samples have no events in the window", modality, n_without)
    return out, problems, n_without


def _note_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputProblem(f"note {path.name} cannot be read: {exc}", path) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputProblem(
            f"note {path.name} is not valid UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
            f"re-save it as UTF-8",
            path,
        ) from exc
    if "\x00" in text:
        raise InputProblem(f"note {path.name} contains NUL bytes: it is not a text file", path)
    if not text.strip():
        raise InputProblem(f"note {path.name} is empty (only whitespace)", path)
    return text


def _note_hours(path: Path, required: bool) -> float:
    m = NOTE_NAME.match(path.stem)
    if m:
        return float(m.group(1))
    if required:
        raise InputProblem(
            f"note file name {path.name} does not start with the hours since admission (e.g. 012.5_radiology.txt)",
            path,
        )
    return float("nan")


def read_notes(path: Path) -> list[tuple[float, str]]:
    """(hours, text) of a .txt file or of every .txt file of a folder, sorted by hours."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".txt" and not p.name.startswith("."))
        if not files:
            raise InputProblem(f"notes folder {path} holds no .txt files", path)
        notes = [(_note_hours(p, required=True), _note_text(p)) for p in files]
        return sorted(notes, key=lambda n: n[0])
    if path.is_file():
        return [(_note_hours(path, required=False), _note_text(path))]
    raise InputProblem(f"file not found: {path}", path)


def _notes_in_window(
    notes: list[tuple[float, str]], window: float | None, cell: str, sid: str
) -> tuple[list[tuple[float, str]], int, Problem | None]:
    """The notes of one sample written within the observation window ``[0, window]`` h, how many were
    dropped for lying outside it, and a problem when a note has no time (it cannot be checked).
    Without a window every note is kept."""
    if window is None:
        return notes, 0, None
    if any(np.isnan(h) for h, _ in notes):
        return [], 0, Problem(
            cell, sid,
            f"the note has no time (hours since admission), so it cannot be checked against the study's "
            f"observation window of {window:g} h; name the file by the hours it was written at, e.g. "
            f"012.5_radiology.txt, or give a folder of such files",
        )
    kept = [(h, t) for h, t in notes if 0 <= h <= window]
    return kept, len(notes) - len(kept), None


def ingest_notes(manifest: pd.DataFrame, root: Path, modality: str, spec: dict[str, Any]) -> tuple[pd.DataFrame, list[Problem], int]:
    """``notes``: manifest path column → ``sample_id, note_index, hours, text``; with the study's
    observation window (``window_hours``) only the notes written within ``[0, window_hours]`` h."""
    rows: list[tuple[str, int, float, str]] = []
    problems: list[Problem] = []
    missing = 0
    window = float(spec["window_hours"]) if spec.get("window_hours") is not None else None
    n_read = n_outside = n_emptied = 0
    for sid, cell in zip(manifest["sample_id"].astype(str), manifest[modality], strict=True):
        if cell is None or (isinstance(cell, float) and np.isnan(cell)) or pd.isna(cell) or str(cell).strip() == "":
            missing += 1
            continue
        path = resolve_path(root, str(cell).strip())
        try:
            notes = read_notes(path)
        except InputProblem as exc:
            problems.append(Problem.about(str(cell), sid, exc.reason, sources=(exc.file,), root=root))
            continue
        n_read += len(notes)
        notes, outside, untimed = _notes_in_window(notes, window, str(cell), sid)
        if untimed is not None:
            problems.append(untimed)
            continue
        n_outside += outside
        if not notes:  # every note of the sample lies outside the window: it has none to give
            n_emptied += 1
            missing += 1
        rows.extend((sid, i, h, t) for i, (h, t) in enumerate(notes))
    if window is not None:
        log.info(
            "%s: kept %d of %d notes; dropped %d written outside [0, %g] h (%d samples left without notes)",
            modality, len(rows), n_read, n_outside, window, n_emptied,
        )
    out = pd.DataFrame(rows, columns=["sample_id", "note_index", "hours", "text"])
    out = out.astype({"sample_id": "string", "note_index": "int64", "hours": "float64", "text": "string"})
    return out, problems, missing


TABLE_READERS = {"table": ingest_table, "events": ingest_events, "notes": ingest_notes}
