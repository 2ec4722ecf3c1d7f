"""The best AUROC a demo cohort allows, beside each model's: the generator's ``oracle.json`` states
it per task for each modality and each fused set, so a model's oracle is the entry of the
modalities it reads (a head reads those of its inputs, all the way down)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def load_oracle(path: str | Path | None) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text(encoding="utf-8")) if path and Path(path).is_file() else None


def model_modalities(study: Mapping[str, Any], heads: Mapping[str, Any], name: str) -> set[str]:
    """The study modalities behind model ``name``: a stage-1 network's or an encoder's modality, a
    table modality itself, and for a head the union over its inputs (heads included)."""
    if name in study.get("stage1", {}):
        return {study["stage1"][name]["modality"]}
    if name in study.get("encoders", {}):
        return {study["encoders"][name]["modality"]}
    if name in study.get("modalities", {}):
        return {name}
    if name in heads:
        return set().union(*(model_modalities(study, heads, item) for item in heads[name].get("inputs", [])))
    return set()


def oracle_auc(oracle: Mapping[str, Any] | None, task: str, modalities: set[str]) -> float | None:
    """The oracle AUROC of ``task`` from exactly ``modalities``; None where the generator states none."""
    entry = (oracle or {}).get("tasks", {}).get(task)
    if not entry or not modalities:
        return None
    if len(modalities) == 1:
        return entry.get("modalities", {}).get(next(iter(modalities)))
    for key, value in entry.get("fused", {}).items():
        if set(key.split("+")) == modalities:
            return value
    return None
