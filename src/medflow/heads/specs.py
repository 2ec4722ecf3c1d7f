"""What each stage-2 head of a study is and which files it reads.

A ``fusion_grid`` entry of the config (the EHR study) expands into many heads, each its own
Snakemake target: ``{x}_unimodal_{task}`` for every modality letter used, and
``{set}_{mode}_{task}`` for every modality set × fusion mode × task (e.g. ``ecn_joint_mortality``).
Early fusion reads the frozen embeddings of the unimodal heads, late fusion their predictions,
joint fusion the encoders' inputs themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medflow.config import TABLE_KINDS, stratify_label

# heads that can use a GPU (Snakemake `resources: gpu`); the others never import torch
NEURAL_TYPES = ("dsaf", "lstm_image", "lstm_study", "ehr_unimodal", "ehr_early", "ehr_joint", "xgboost")
RSNA_EXAM_LABELS = (
    "negative_exam_for_pe", "indeterminate", "chronic_pe", "acute_and_chronic_pe", "central_pe",
    "leftsided_pe", "rightsided_pe", "rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1",
)  # fmt: skip


def expand_heads(study: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """name → full spec (``type``, ``inputs``, ``tasks`` filled in) of every head of ``study``."""
    heads: dict[str, dict[str, Any]] = {}
    for name, spec in study.get("stage2", {}).items():
        if spec["type"] == "fusion_grid":
            heads.update(_expand_grid(study, name, spec))
            continue
        spec = dict(spec)
        if spec["type"] == "lstm_study" and not spec.get("tasks"):
            spec["tasks"] = [t for t in RSNA_EXAM_LABELS if t in study["labels"]] or [stratify_label(study)]
        spec.setdefault("tasks", [stratify_label(study)])
        heads[name] = spec
    return heads


def _expand_grid(study: Mapping[str, Any], name: str, grid: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    letters: dict[str, str] = dict(grid.get("modalities") or {})
    sets = list(grid.get("sets") or ["".join(letters)])
    tasks = list(grid.get("tasks") or study["labels"])
    common = {k: grid[k] for k in ("hidden", "dropout", "seed", "gpus", "train", "variables") if k in grid}
    out: dict[str, dict[str, Any]] = {}
    used = sorted({c for s in sets for c in s}, key=lambda c: list(letters).index(c) if c in letters else 99)
    for task in tasks:
        for letter in used:
            out[f"{letter}_unimodal_{task}"] = {
                **common, "type": "ehr_unimodal", "inputs": [letters[letter]], "tasks": [task],
                "modality_set": letter, "grid": name,
            }
        for modality_set in sets:
            for mode in grid.get("modes", ["early", "joint", "late"]):
                unimodal = [f"{c}_unimodal_{task}" for c in modality_set]
                inputs = [letters[c] for c in modality_set] if mode == "joint" else unimodal
                out[f"{modality_set}_{mode}_{task}"] = {
                    **common, "type": f"ehr_{mode}", "inputs": inputs, "tasks": [task],
                    "modality_set": modality_set, "grid": name,
                }
    return out


def grid_problems(study: Mapping[str, Any], where: str) -> list[str]:
    """Config errors of fusion grids (letters, sets) that the JSON schema cannot express."""
    out = []
    for name, spec in study.get("stage2", {}).items():
        if spec["type"] != "fusion_grid":
            continue
        letters = spec.get("modalities") or {}
        if not letters:
            out.append(f"{where}.stage2.{name}.modalities: a fusion_grid needs letter → input, e.g. {{e: ehr-events}}")
        for modality_set in spec.get("sets") or []:
            unknown = sorted(set(modality_set) - set(letters))
            if unknown:
                out.append(f"{where}.stage2.{name}.sets: {modality_set!r} uses letter(s) {', '.join(unknown)} "
                           f"not in modalities ({', '.join(letters)})")
    return out


def input_files(study: Mapping[str, Any], head: Mapping[str, Any], study_dir: str) -> dict[str, dict[str, str]]:
    """The files a head reads, by role: ``features`` (name → HDF5), ``tables`` (name → parquet),
    ``predictions`` (late fusion: head → predictions.csv), ``slices`` (slice labels: ingest HDF5)."""
    files: dict[str, dict[str, str]] = {"features": {}, "tables": {}, "predictions": {}, "slices": {}}
    kinds = {m: spec["kind"] for m, spec in study["modalities"].items()}
    for item in head["inputs"]:
        if head["type"] == "ehr_late":
            files["predictions"][item] = f"{study_dir}/stage2/{item}/predictions.csv"
        elif head["type"] == "ehr_early":
            files["features"][item] = f"{study_dir}/stage2/{item}/embeddings.h5"
        elif item in study["modalities"] and kinds[item] in TABLE_KINDS:
            files["tables"][item] = f"{study_dir}/ingest/{item}.parquet"
        else:
            files["features"][item] = f"{study_dir}/features/{item}.h5"
    if head["type"] == "lstm_image":
        modalities = {study["stage1"][i]["modality"] for i in head["inputs"] if i in study.get("stage1", {})}
        for modality in sorted(modalities):
            files["slices"][modality] = f"{study_dir}/ingest/{modality}.h5"
    return files
