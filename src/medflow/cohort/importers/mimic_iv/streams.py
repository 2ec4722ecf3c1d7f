"""The big tables, streamed by DuckDB: chart, lab and procedure events into events.csv, radiology notes
into one folder of text files per admission. No table is held in memory: the CSV scans read only the
columns used and drop rows by item and admission before the join to the admission times."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medflow.cohort.importers._common import ImporterError
from medflow.cohort.importers.mimic_iv.layout import (
    LAB_FLUID,
    NOTES_TABLE,
    find_table,
    header,
    hosp_table,
    icu_table,
    read_errors,
    require_columns,
    sql_list,
    sql_text,
)
from medflow.io.atomic import atomic_path

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)


def connect(workers: int, temp_dir: Path, memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
    import duckdb  # here: the Snakefile imports every importer to check the config

    con = duckdb.connect(config={"threads": max(1, int(workers)), "memory_limit": memory_limit,
                                 "temp_directory": str(temp_dir), "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")  # it would write to the rule's log
    return con


def _scan(path: Path, read_from: Path, types: dict[str, str]) -> str:
    """``read_csv`` of ``read_from`` with the columns of ``path``'s header: no sniffing (``read_from`` may be
    a FIFO), the named columns typed, the rest text."""
    spec = ", ".join(f"{sql_text(c)}: {sql_text(types.get(c, 'VARCHAR'))}" for c in header(path))
    return (f"read_csv({sql_text(read_from)}, header = true, auto_detect = false, quote = '\"', escape = '\"', "
            f"columns = {{{spec}}})")


FAILED = "medflow-decompression-failed"


def decompressor() -> list[str]:
    """ISA-L's igzip (python-isal, ~3x gzip's speed) where installed, else ``gzip -dc``."""
    if importlib.util.find_spec("isal") is not None:
        return [sys.executable, "-m", "isal.igzip", "-cd"]
    return ["gzip", "-dc"]


@contextlib.contextmanager
def prefiltered(path: Path, ids: Sequence[int], temp: Path) -> Iterator[Path]:
    """A gzipped table as a FIFO fed by ``igzip -cd | grep -F`` (``gzip -dc`` without python-isal), passing
    the header and only the lines that hold one of the item ids between commas (a superset of the wanted
    rows: the query filters exactly).

    Decompression runs in its own process beside DuckDB's parse, which then sees a few per cent of
    the bytes: the scan runs at about the rate of the decompression alone. Uncompressed tables, or a
    machine without ``gzip``/``grep``/FIFOs, are read by DuckDB directly (the path itself).
    """
    if not (path.name.endswith(".gz") and hasattr(os, "mkfifo") and shutil.which("gzip") and shutil.which("grep")):
        with read_errors(path):
            yield path
        return
    temp.mkdir(parents=True, exist_ok=True)
    fifo = temp / f"{path.name}.{os.getpid()}.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    needles = " ".join(f"-e ,{x}," for x in ("itemid", *(int(i) for i in ids)))  # the header, then the items
    script = (f"{{ {shlex.join(decompressor())} \"$1\" || echo {FAILED} >&2; }} "
              f"| LC_ALL=C grep -aF {needles} > \"$2\"")
    proc = subprocess.Popen(["sh", "-c", script, "sh", str(path), str(fifo)], stderr=subprocess.PIPE,
                            start_new_session=True)
    failed = True
    try:
        with read_errors(path):
            yield fifo
        failed = False
    finally:
        if failed and proc.poll() is None:  # the query stopped early: stop the writers (their group, started here)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(OSError):  # a writer still waiting for its reader
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        _, err = proc.communicate()
        fifo.unlink(missing_ok=True)
        if FAILED.encode() in err or (not failed and proc.returncode > 1):  # whatever DuckDB made of it
            last = err.decode(errors="replace").replace(FAILED, "").strip().splitlines()[-1:] or ["?"]
            raise ImporterError(f"{path}: cannot be decompressed ({last[0][:200]})")


def select_items(con: duckdb.DuckDBPyConnection, root: Path, chart: Sequence[str], labs: Sequence[str],
                 procedures: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The item ids of the wanted labels (``itemid, variable, source``) and a warning per label not found.

    Chart and procedure items come from ``icu/d_items`` (by ``linksto``), labs from ``hosp/d_labitems``
    with fluid Blood only (a urine glucose is not a blood glucose).
    """
    d_items, d_lab = icu_table(root, "d_items"), hosp_table(root, "d_labitems")
    require_columns(d_items, ("itemid", "label", "linksto"))
    require_columns(d_lab, ("itemid", "label", "fluid"))
    parts = []
    for source, wanted in (("chartevents", chart), ("procedureevents", procedures)):
        if wanted:
            parts.append(con.execute(f"""
                SELECT CAST(itemid AS BIGINT) AS itemid, trim(label) AS variable, '{source}' AS source
                FROM read_csv({sql_text(d_items)}, header = true, all_varchar = true)
                WHERE lower(trim(linksto)) = '{source}' AND lower(trim(label)) IN {sql_list(w.lower() for w in wanted)}
            """).df())
    if labs:
        parts.append(con.execute(f"""
            SELECT CAST(itemid AS BIGINT) AS itemid, trim(label) AS variable, 'labevents' AS source
            FROM read_csv({sql_text(d_lab)}, header = true, all_varchar = true)
            WHERE lower(trim(fluid)) = '{LAB_FLUID}' AND lower(trim(label)) IN {sql_list(w.lower() for w in labs)}
        """).df())
    items = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["itemid", "variable", "source"])
    warnings = []
    for source, wanted in (("chartevents", chart), ("labevents", labs), ("procedureevents", procedures)):
        found = set(items.loc[items["source"] == source, "variable"].str.lower())
        lost = [w for w in wanted if w.lower() not in found]
        if lost:
            where = "d_labitems (fluid Blood)" if source == "labevents" else f"d_items (linksto {source})"
            warnings.append(f"{source}: no item labelled {', '.join(repr(x) for x in lost)} in {where}")
    return items, warnings


def write_events(con: duckdb.DuckDBPyConnection, root: Path, cohort: pd.DataFrame, items: pd.DataFrame,
                 window_hours: float, out: Path, temp: Path) -> dict[str, int]:
    """``events.csv`` (admission_id, hours, variable, value) of the cohort's admissions inside
    [0, window_hours]; returns rows written per source table.

    Chart and lab rows: ``value`` as published (numbers stay numbers, GCS text stays text), the
    number ``valuenum`` where ``value`` is empty. Procedures as active intervals: value 1 at the start
    (0 h for one running at admission), value 0 at the end when it ends inside the window. One table
    is scanned at a time, each once.
    """
    con.register("cohort_adm", cohort[["hadm_id", "admittime"]])
    con.register("wanted_items", items)
    con.execute("CREATE OR REPLACE TEMP TABLE picked "
                "(src VARCHAR, admission_id BIGINT, hours DOUBLE, variable VARCHAR, value VARCHAR)")
    w = float(window_hours)
    counted = []
    for source, columns in (("chartevents", ("charttime", "value", "valuenum")),
                            ("labevents", ("charttime", "value", "valuenum")),
                            ("procedureevents", ("starttime", "endtime"))):
        ids = items.loc[items["source"] == source, "itemid"].astype(int).tolist()
        if not ids:
            continue
        path = hosp_table(root, source) if source == "labevents" else icu_table(root, source)
        require_columns(path, ("hadm_id", "itemid", *columns))
        types = {"hadm_id": "BIGINT", "itemid": "BIGINT"}  # times as text, cast after the filters: a bad cell is NULL
        picked = ", ".join(f"TRY_CAST({c} AS TIMESTAMP) AS {c}" if c.endswith("time") else c for c in columns)
        with prefiltered(path, ids, temp) as read_from:
            rows = f"""
                SELECT e.*, c.admittime, i.variable
                FROM (SELECT hadm_id, itemid, {picked} FROM {_scan(path, read_from, types)}
                      WHERE itemid IN ({", ".join(map(str, ids))})
                        AND hadm_id IN (SELECT hadm_id FROM cohort_adm)) e
                JOIN cohort_adm c ON e.hadm_id = c.hadm_id
                JOIN wanted_items i ON e.itemid = i.itemid AND i.source = '{source}'"""
            if source != "procedureevents":
                con.execute(f"""
                    INSERT INTO picked
                    SELECT '{source}', hadm_id, epoch(charttime - admittime) / 3600.0 AS h, variable,
                           coalesce(nullif(trim(value), ''), CAST(valuenum AS VARCHAR))
                    FROM ({rows}) WHERE h BETWEEN 0 AND {w}""")
            else:
                con.execute(f"""
                    CREATE OR REPLACE TEMP TABLE proc AS
                    SELECT hadm_id, variable, epoch(starttime - admittime) / 3600.0 AS s,
                           epoch(endtime - admittime) / 3600.0 AS e FROM ({rows})""")
        if source == "procedureevents":
            con.execute(f"""
                INSERT INTO picked
                SELECT '{source}', hadm_id, greatest(s, 0), variable, '1' FROM proc
                WHERE s <= {w} AND coalesce(e, {w}) >= 0
                UNION ALL
                SELECT '{source}', hadm_id, e, variable, '0' FROM proc WHERE e BETWEEN 0 AND {w} AND s <= e""")
        counted.append(source)
    with atomic_path(out) as tmp:
        con.execute(f"""
            COPY (SELECT admission_id, round(hours, 4) AS hours, variable, value FROM picked
                  WHERE value IS NOT NULL ORDER BY admission_id, hours, variable, value)
            TO {sql_text(tmp)} (HEADER, DELIMITER ',')
        """)
    counts = dict(con.execute("SELECT src, count(*) FROM picked WHERE value IS NOT NULL GROUP BY src").fetchall())
    return {s: int(counts.get(s, 0)) for s in counted}


def admissions_with_events(con: duckdb.DuckDBPyConnection) -> set[int]:
    return {int(r[0]) for r in con.execute(
        "SELECT DISTINCT admission_id FROM picked WHERE value IS NOT NULL").fetchall()}


def note_hours_name(hours: float, taken: set[str]) -> str:
    """``012.5_radiology.txt`` (hours rounded down to 0.1, never past the note's time); ``_2`` … on a tie."""
    stem = f"{math.floor(hours * 10) / 10:05.1f}_radiology"
    name, k = f"{stem}.txt", 1
    while name in taken:
        k += 1
        name = f"{stem}_{k}.txt"
    taken.add(name)
    return name


def write_notes(con: duckdb.DuckDBPyConnection, note_root: Path, cohort: pd.DataFrame, window_hours: float,
                out_dir: Path, folder: str = "notes") -> dict[int, Any]:
    """Radiology notes inside [0, window_hours] of each admission, in time order, one file each under
    ``out_dir/notes/<hadm_id>/``; returns {hadm_id: number of notes}. A note is matched by its
    ``hadm_id``, or where that is empty by subject and time. The text goes only into those files."""
    path = find_table(note_root, (NOTES_TABLE[0], ""), NOTES_TABLE[1], what="the radiology notes (note/radiology)")
    require_columns(path, ("note_id", "subject_id", "hadm_id", "charttime", "text"))
    con.register("cohort_notes", cohort[["subject_id", "hadm_id", "admittime"]])
    h = "epoch(n.charttime - c.admittime) / 3600.0"
    query = f"""
        SELECT c.hadm_id, {h} AS hours, n.text
        FROM (SELECT note_id, subject_id, hadm_id, TRY_CAST(charttime AS TIMESTAMP) AS charttime, text
              FROM {_scan(path, path, {"subject_id": "BIGINT", "hadm_id": "BIGINT"})}
              WHERE subject_id IN (SELECT subject_id FROM cohort_notes)) n
        JOIN cohort_notes c ON n.subject_id = c.subject_id AND (n.hadm_id = c.hadm_id OR n.hadm_id IS NULL)
        WHERE {h} BETWEEN 0 AND {float(window_hours)} AND n.text IS NOT NULL
        ORDER BY c.hadm_id, hours, n.note_id
    """
    counts: dict[int, int] = {}
    names: dict[int, set[str]] = {}
    with read_errors(path):
        cur = con.execute(query)  # a cursor would not see the registered frame
        while rows := cur.fetchmany(2000):
            for hadm, hours, text in rows:
                hadm = int(hadm)
                target = out_dir / folder / str(hadm)
                target.mkdir(parents=True, exist_ok=True)
                name = note_hours_name(float(hours), names.setdefault(hadm, set()))
                (target / name).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
                counts[hadm] = counts.get(hadm, 0) + 1
    if not counts and cohort.empty is False:
        log.info("no radiology note inside the window of any candidate admission")
    return counts


def check_threads(workers: int) -> None:
    if int(workers) < 1:
        raise ImporterError(f"workers must be at least 1, got {workers}")
