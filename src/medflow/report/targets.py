"""Which models a study has (stage-1 networks and stage-2 heads share one namespace of report
names) and which models each one is compared against in its report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medflow.heads.registry import get_head_type
from medflow.heads.specs import unimodal_head


def model_kinds(study: Mapping[str, Any], heads: Mapping[str, Any]) -> dict[str, str]:
    """name → ``stage1`` or ``stage2`` for every model with a predictions.csv."""
    out = dict.fromkeys(study.get("stage1", {}), "stage1")
    clash = sorted(set(out) & set(heads))
    if clash:
        raise ValueError(f"names used by both a stage1 model and a stage2 head: {', '.join(clash)}")
    out.update(dict.fromkeys(heads, "stage2"))
    return out


def reference_models(study: Mapping[str, Any], heads: Mapping[str, Any], name: str) -> list[str]:
    """The models ``name`` is compared with: its ``compare_to`` list when configured; otherwise the
    stage-1 models among its inputs and, for EHR fusion heads, the unimodal heads of its task.
    Kept narrow on purpose: a report reruns when a reference changes."""
    spec = heads.get(name)
    if spec is None:
        return []
    if spec.get("compare_to"):
        return [r for r in spec["compare_to"] if r != name]
    refs = [i for i in spec.get("inputs", []) if i in study.get("stage1", {})]
    if get_head_type(spec["type"]).reference == "unimodal":
        task = spec["tasks"][0]
        refs = [unimodal_head(letter, task) for letter in spec["modality_set"]]
    return [r for r in refs if r != name and (r in heads or r in study.get("stage1", {}))]
