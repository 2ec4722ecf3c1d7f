"""The mimic-iv importer: admissions → window cut → CXR → notes → events, as a sequential cohort flow."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from medflow.cohort.importers._common import ImporterError, relative_to, write_csv_atomic, write_json_atomic
from medflow.cohort.importers._registry import register_importer
from medflow.cohort.importers.mimic_iv.admissions import (
    demographics,
    label_admissions,
    read_admissions,
    window_status,
)
from medflow.cohort.importers.mimic_iv.cxr import choose_images, qualifying_images
from medflow.cohort.importers.mimic_iv.layout import (
    CENTER,
    CHART_ITEMS,
    LAB_ITEMS,
    LABELS,
    MANIFEST_COLUMNS,
    MODALITIES,
    PROCEDURE_ITEMS,
    SOURCE,
    item_names,
    names,
)
from medflow.cohort.importers.mimic_iv.streams import (
    admissions_with_events,
    check_threads,
    connect,
    select_items,
    write_events,
    write_notes,
)
from medflow.problems import Problem, write_problems

log = logging.getLogger(__name__)

NOTES_DIR = "notes"


def _keep(cand: pd.DataFrame, has: set[int], modality: str, required: tuple[str, ...], flow: dict[str, int]) -> pd.DataFrame:
    """Count the candidates without ``modality``; drop them when it is required."""
    without = ~cand["hadm_id"].isin(has)
    flow[f"without_{modality}"] = int(without.sum())
    if modality in required:
        flow[f"excluded_without_{modality}"] = int(without.sum())
        return cand[~without]
    return cand


@register_importer(
    SOURCE,
    description="MIMIC-IV (hosp/ or v1.0 core/, icu/) + MIMIC-CXR-JPG + MIMIC-IV-Note into an ehr cohort",
    reads="the MIMIC-IV folder holding hosp/ (v1.0: core/ and hosp/) and icu/",
    tracked=("hosp/d_labitems.csv.gz", "hosp/d_labitems.csv"),  # in hosp/ in v1.0, v2.x and v3.x alike
    options={
        "cxr_path": "the MIMIC-CXR-JPG folder (files/ and mimic-cxr-2.0.0-metadata.csv.gz); empty: no X-rays",
        "note_path": "the MIMIC-IV-Note folder (note/radiology.csv.gz); empty: no notes",
        "window_hours": "observation window in hours after admittime (the study's window_hours)",
        "views": "X-ray views (ViewPosition) to take, e.g. AP or 'AP,PA'",
        "require": "modalities an admission must have, of ehr, cxr, notes (comma-separated)",
        "chart_items": "chart item labels (d_items), ';'-separated; empty: the seed's 9",
        "lab_items": "blood lab labels (d_labitems), ';'-separated; empty: the seed's 22",
        "procedure_items": "procedure labels (d_items), ';'-separated; empty: the seed's 10",
        "workers": "DuckDB threads",
    },
)
def import_mimic_iv(
    root: Path,
    out_dir: Path,
    *,
    cxr_path: str = "",
    note_path: str = "",
    window_hours: float = 48.0,
    views: str = "AP",
    require: str = "ehr,cxr,notes",
    chart_items: str = "",
    lab_items: str = "",
    procedure_items: str = "",
    workers: int = 2,
) -> Path:
    """Write manifest.csv, events.csv, notes/<hadm_id>/, demographics.csv, cxr_images.csv,
    import_problems.csv and cohort.json into ``out_dir``; return the manifest path.

    ``views``, ``require`` and the item lists may also be lists (the config's YAML lists).
    """
    root, out_dir = Path(root), Path(out_dir)
    check_threads(workers)
    window = float(window_hours)
    if window <= 0:
        raise ImporterError(f"window_hours must be positive, got {window_hours}")
    required = names(require, MODALITIES)
    unknown = [m for m in required if m not in MODALITIES]
    if unknown:
        raise ImporterError(f"require: unknown modality {', '.join(unknown)}; choose among {', '.join(MODALITIES)}")
    view_list = names(views, ("AP",))
    cxr_root = Path(cxr_path) if str(cxr_path or "").strip() else None
    note_root = Path(note_path) if str(note_path or "").strip() else None
    for modality, where, option in (("cxr", cxr_root, "cxr_path"), ("notes", note_root, "note_path")):
        if modality in required and where is None:
            raise ImporterError(f"require lists {modality} but {option} is not set")
        if where is not None and not where.is_dir():
            raise ImporterError(f"{option}: folder not found: {where}")
    if not root.is_dir():
        raise ImporterError(f"MIMIC-IV folder not found: {root}")
    chart, labs, procs = (item_names(chart_items, CHART_ITEMS), item_names(lab_items, LAB_ITEMS),
                          item_names(procedure_items, PROCEDURE_ITEMS))

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / NOTES_DIR, ignore_errors=True)  # notes of an earlier import
    temp = out_dir / ".duckdb_tmp"
    con = connect(workers, temp)
    try:
        adm, race = read_admissions(con, root)
        adm = label_admissions(adm)
        status = window_status(adm, window)
        flow = {"admissions_seen": len(adm), "excluded_bad_times": int((status == "bad_times").sum()),
                "excluded_ended_in_window": int((status == "ended_in_window").sum())}
        cand = adm[status == "ok"]
        flow["after_window_cut"] = len(cand)
        log.info("%d admissions, %d end inside the %g h window", len(adm), flow["excluded_ended_in_window"], window)

        problems: list[Problem] = []
        images = pd.DataFrame(columns=["hadm_id", "hours", "view", "path", "usable"])
        if cxr_root is not None:
            images, problems = choose_images(qualifying_images(con, cxr_root, cand, view_list, window), cxr_root,
                                             workers)
        flow["cxr_images_in_window"] = len(images)
        flow["cxr_images_unusable"] = len(problems)
        usable = images[images["usable"].astype(bool)]
        cand = _keep(cand, set(usable["hadm_id"].astype(int)), "cxr", required, flow)

        note_counts: dict[int, int] = {}
        if note_root is not None:
            note_counts = write_notes(con, note_root, cand, window, out_dir, NOTES_DIR)
        cand = _keep(cand, set(note_counts), "notes", required, flow)

        items, item_warnings = select_items(con, root, chart, labs, procs)
        event_rows = write_events(con, root, cand, items, window, out_dir / "events.csv", temp)
        has_events = admissions_with_events(con)
        cand = _keep(cand, has_events, "ehr", required, flow)  # events.csv holds no row of those it drops
    finally:
        con.close()
        shutil.rmtree(temp, ignore_errors=True)

    flow["n_samples"] = len(cand)
    if cand.empty:
        raise ImporterError(f"no admission is left in the cohort; cohort flow: {flow}")
    kept = set(cand["hadm_id"].astype(int))
    for hadm in set(note_counts) - kept:  # notes of admissions a later requirement left out
        shutil.rmtree(out_dir / NOTES_DIR / str(hadm), ignore_errors=True)

    last = usable.groupby("hadm_id").tail(1).set_index("hadm_id")  # time order: the last usable image
    cxr_base = relative_to(cxr_root, out_dir) if cxr_root else ""  # once: thousands of images
    cxr_cells = {int(h): f"{cxr_base}/{p}" for h, p in last["path"].items()}
    manifest = pd.DataFrame(
        {
            "sample_id": cand["hadm_id"].astype(str),
            "patient_id": cand["subject_id"].astype(str),
            "center": CENTER,
            **{label: cand[label].astype(int) for label in LABELS},
            "cxr": [cxr_cells.get(int(h), "") for h in cand["hadm_id"]],
            "cxr_hours": [round(float(last.at[h, "hours"]), 3) if int(h) in cxr_cells else "" for h in cand["hadm_id"]],
            "notes": [f"{NOTES_DIR}/{h}" if int(h) in note_counts else "" for h in cand["hadm_id"]],
        },
        columns=list(MANIFEST_COLUMNS),
    )
    listing = usable[usable["hadm_id"].isin(kept)]
    write_csv_atomic(
        pd.DataFrame({"sample_id": listing["hadm_id"].astype(int).astype(str), "hours": listing["hours"].round(3),
                      "view": listing["view"],
                      "cxr": [f"{cxr_base}/{p}" for p in listing["path"]]}),
        out_dir / "cxr_images.csv",
    )
    write_csv_atomic(demographics(cand), out_dir / "demographics.csv")
    write_problems(out_dir / "import_problems.csv", problems)
    present = {"ehr": len(kept & has_events),
               "cxr": int((manifest["cxr"] != "").sum()), "notes": int((manifest["notes"] != "").sum())}
    summary = (f"Cohort flow (import): {flow['admissions_seen']} admissions; {flow['excluded_ended_in_window']} ended "
               f"within {window:g} h and {flow['excluded_bad_times']} had unusable times (excluded); "
               + "; ".join(f"{flow.get(f'excluded_without_{m}', 0)} without {m} (excluded)" for m in ("cxr", "notes", "ehr") if m in required)
               + f"; {flow['n_samples']} in the cohort.")
    info = {
        "source": SOURCE,
        "grouping": "patient",
        "warnings": [summary, *item_warnings],
        "version": "v1.0 (core/, ethnicity)" if race == "ethnicity" else "v2+ (hosp/, race)",
        "window_hours": window,
        "require": list(required),
        "views": list(view_list),
        "flow": flow,
        "n_samples": len(manifest),
        "n_patients": int(manifest["patient_id"].nunique()),
        "modalities_present": present,
        "class_counts": {label: int(manifest[label].sum()) for label in LABELS},
        "events_rows": event_rows,
        "notes_written": int(sum(note_counts[h] for h in kept if h in note_counts)),
        "items": {s: sorted(items.loc[items["source"] == s, "variable"].unique().tolist())
                  for s in ("chartevents", "labevents", "procedureevents")},
        "cxr_rule": "the last usable image of the views inside the window (all listed in cxr_images.csv)",
        "tables": {"demographics": "demographics.csv", "events": "events.csv", "cxr_images": "cxr_images.csv"},
        "source_paths": {"mimic_iv": str(root.resolve()), "cxr": str(cxr_root.resolve()) if cxr_root else None,
                         "notes": str(note_root.resolve()) if note_root else None},
    }
    write_json_atomic(info, out_dir / "cohort.json")
    manifest_path = write_csv_atomic(manifest, out_dir / "manifest.csv")  # last: its presence means done
    log.info("imported %d admissions of %d patients into %s (flow %s)", len(manifest), info["n_patients"],
             manifest_path, flow)
    return manifest_path

