"""What each stage-2 head of a study is and which files it reads.

A ``fusion_grid`` entry of the config (the EHR study) expands into many heads, each its own
Snakemake target: ``{x}_unimodal_{task}`` for every modality letter used, and
``{set}_{mode}_{task}`` for every modality set × fusion mode × task (e.g. ``ecn_joint_mortality``).
Early fusion reads the frozen embeddings of the unimodal heads, late fusion their predictions,
joint fusion the encoders' inputs themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medflow.heads.registry import get_head_type, list_head_types
from medflow.study import TABLE_KINDS, stratify_label

if TYPE_CHECKING:
    from medflow.workflow.layout import Layout

# heads that can use a GPU (Snakemake `resources: gpu`); the others never import torch
NEURAL_TYPES = tuple(list_head_types(uses_gpu=True))


def expand_heads(study: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """name → full spec (``type``, ``inputs``, ``tasks`` filled in) of every head of ``study``."""
    heads: dict[str, dict[str, Any]] = {}
    for name, spec in study.get("stage2", {}).items():
        if spec["type"] == "fusion_grid":
            heads.update(_expand_grid(study, name, spec))
            continue
        spec = dict(spec)
        if not spec.get("tasks"):
            defaults = [t for t in get_head_type(spec["type"]).default_tasks if t in study["labels"]]
            spec["tasks"] = defaults or [stratify_label(study)]
        heads[name] = spec
    return heads


def unimodal_head(letter: str, task: str) -> str:
    """The name of a fusion grid's unimodal head of modality ``letter`` for ``task``."""
    return f"{letter}_unimodal_{task}"


def _expand_grid(study: Mapping[str, Any], name: str, grid: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    letters: dict[str, str] = dict(grid.get("modalities") or {})
    sets = list(grid.get("sets") or ["".join(letters)])
    tasks = list(grid.get("tasks") or study["labels"])
    common = {k: grid[k] for k in ("hidden", "dropout", "seed", "gpus", "train", "variables") if k in grid}
    out: dict[str, dict[str, Any]] = {}
    used = sorted({c for s in sets for c in s}, key=lambda c: list(letters).index(c) if c in letters else 99)
    for task in tasks:
        for letter in used:
            out[unimodal_head(letter, task)] = {
                **common, "type": "ehr_unimodal", "inputs": [letters[letter]], "tasks": [task],
                "modality_set": letter, "grid": name,
            }
        for modality_set in sets:
            for mode in grid.get("modes", ["early", "joint", "late"]):
                unimodal = [unimodal_head(c, task) for c in modality_set]
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


def input_files(
    study: Mapping[str, Any], head: Mapping[str, Any], layout: Layout, study_name: str
) -> dict[str, dict[str, str]]:
    """The files a head reads, by role: ``features`` (name → HDF5), ``tables`` (name → parquet),
    ``predictions`` (late fusion: head → predictions.csv), ``slices`` (slice labels: ingest HDF5)."""
    files: dict[str, dict[str, str]] = {"features": {}, "tables": {}, "predictions": {}, "slices": {}}
    kinds = {m: spec["kind"] for m, spec in study["modalities"].items()}
    head_type = get_head_type(head["type"])
    for item in head["inputs"]:
        if head_type.reads == "predictions":
            files["predictions"][item] = layout.predictions(study_name, "stage2", item)
        elif head_type.reads == "embeddings":
            files["features"][item] = layout.head_file(study_name, item, "embeddings.h5")
        elif item in study["modalities"] and kinds[item] in TABLE_KINDS:
            files["tables"][item] = layout.ingest(study_name, item, kinds[item])
        else:
            files["features"][item] = layout.features(study_name, item)
    if head_type.slices:
        modalities = {study["stage1"][i]["modality"] for i in head["inputs"] if i in study.get("stage1", {})}
        for modality in sorted(modalities):
            files["slices"][modality] = layout.ingest(study_name, modality, kinds[modality])
    return files
