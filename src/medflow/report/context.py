"""What a report says besides the metrics: who was in the cohort and who was left out (and why),
how it was split, and where the numbers came from (provenance)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

import medflow
from medflow.io.contracts import read_contract_csv, read_manifest_table
from medflow.io.hashing import sha256_file
from medflow.privacy import for_report

PACKAGES = ("torch", "torchvision", "monai", "scikit-learn", "scipy", "statsmodels", "xgboost-cpu", "gensim",
            "pydicom", "h5py", "numpy", "pandas", "snakemake", "matplotlib")  # fmt: skip


def cohort_flow(
    manifest: str | Path,
    splits: str | Path,
    label: str,
    *,
    problems: Iterable[str | Path] = (),
    excluded: str | Path | None = None,
    cohort_info: str | Path | None = None,
) -> dict[str, Any]:
    """Samples and patients per split and centre with prevalence, and every sample left out (ingest
    problems per modality, samples a head lacked an input for) with the reason."""
    manifest_frame = read_manifest_table(manifest)
    split_frame = read_contract_csv(splits)
    table = split_frame.merge(manifest_frame[["sample_id", label]], on="sample_id", how="left")
    table["y"] = pd.to_numeric(table[label], errors="coerce")
    rows = []
    for (split, center), group in table.groupby(["split", "center"], sort=True):
        rows.append(_counts(group, split=split, center=center))
    totals = [_counts(group, split=split, center="all") for split, group in table.groupby("split", sort=True)]
    left_out = []
    for path in problems:
        path = Path(path)
        if path.is_file():
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            modality = path.name.removesuffix(".problems.csv")
            # by sample id only: the file column holds the manifest cell, which may name the patient
            for record in frame.to_dict("records"):
                left_out.append({"stage": f"ingest ({modality})", "sample_id": record.get("sample_id", ""),
                                 "reason": for_report(record.get("reason", ""))})
    if excluded is not None and Path(excluded).is_file():
        # a sample left out at ingest also lacks that input here: it is counted (and listed) once
        seen = {row["sample_id"] for row in left_out}
        for record in read_contract_csv(excluded).to_dict("records"):
            if record["sample_id"] not in seen:
                left_out.append({"stage": "this head's inputs", "sample_id": record["sample_id"],
                                 "reason": for_report(record["reason"])})
    info = json.loads(Path(cohort_info).read_text()) if cohort_info and Path(cohort_info).is_file() else {}
    grouping = info.get("grouping", "patient")
    return {
        "n_manifest": len(manifest_frame), "n_split": len(split_frame),
        "n_patients": int(split_frame["patient_id"].nunique()), "by_split_centre": rows, "by_split": totals,
        "left_out": left_out, "n_left_out": len({row["sample_id"] for row in left_out}), "grouping": grouping,
        "warnings": cohort_warnings(info.get("warnings", []), grouping), "source": info.get("source", "manifest"),
        # samples whose split came with the cohort (the manifest's split column, e.g. a seed's split folders)
        "n_fixed_split": int(manifest_frame["split"].notna().sum()) if "split" in manifest_frame.columns else 0,
    }


#: What a report says, once, when a cohort has no patient ids.
NO_GROUPING = ("Grouping by patient was impossible (the cohort has no patient ids): samples of one patient may "
               "sit in different splits, so these estimates may be optimistic.")


def cohort_warnings(warnings: Iterable[str], grouping: str) -> list[str]:
    """The cohort's warnings as a report shows them: each once, without paths, and the missing patient
    ids said in one sentence (the importer, the manifest check and the split each note it)."""
    out: list[str] = []
    for warning in (for_report(w) for w in warnings):
        about_ids = "patient" in warning.lower() and " ids" in warning.lower()
        if warning not in out and not (grouping == "none" and about_ids):
            out.append(warning)
    return [*out, NO_GROUPING] if grouping == "none" else out


def _counts(group: pd.DataFrame, *, split: str, center: str) -> dict[str, Any]:
    known = group["y"].notna()
    return {"split": split, "center": center, "samples": len(group), "patients": int(group["patient_id"].nunique()),
            "positives": int(group.loc[known, "y"].sum()),
            "prevalence": float(group.loc[known, "y"].mean()) if known.any() else None}


def git_commit(where: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if out.returncode != 0:
        return "unknown (not a git checkout)"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware() -> dict[str, Any]:
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "cuda_visible_devices": gpus if gpus is not None else "not set"}


def provenance(
    *, config: Mapping[str, Any], manifest: str | Path, predictions: str | Path, run_seconds: float | None,
) -> dict[str, Any]:
    from medflow.config import fingerprint

    return {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "medflow_version": medflow.__version__, "git_commit": git_commit(Path(__file__).parent),
        "config_hash": fingerprint(config), "manifest_sha256": sha256_file(manifest)[:16],
        "predictions_sha256": sha256_file(predictions)[:16], "run_seconds": run_seconds,
        "packages": package_versions(), "hardware": hardware(),
    }
