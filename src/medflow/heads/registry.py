"""The stage-2 head types, one :class:`HeadType` entry each, in the manner of torchvision's model
registry (``register_model`` / ``get_model`` / ``list_models``): every place that treats types
differently (the GPU request, the files a head reads, its default tasks, its report's wording and
reference models) reads the entry instead of keeping its own list of type names.

An entry names its class as ``"module:Class"``, imported only when a head is built: listing or
validating heads (the Snakefile, the config checks) imports neither torch nor scikit-learn, and
fitting a classical head never imports torch. The config schema's ``type`` enum must list the
configurable types (Snakemake validates against the static file; a test keeps the two equal).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from medflow.registry import Registry


@dataclass(frozen=True)
class HeadType:
    """One head type.

    ``reads``: what its inputs name: ``features`` (stage-1 models, encoders, table modalities),
    ``embeddings`` or ``predictions`` (other heads' embeddings.h5 / predictions.csv).
    ``sequences``: its feature inputs are per-slice sequences, not one vector per sample.
    ``slices``: it also reads the per-slice labels of its stage-1 models' modalities.
    ``default_tasks``: the labels it predicts when the config names none (those the study has;
    otherwise the study's stratify label). ``reference``: what its report compares it with: the
    stage-1 models among its inputs, or the unimodal heads of its modality set and task.
    ``report_notes``: setting → value → the sentence its report adds (the first value is the
    setting's default).
    """

    name: str
    target: str
    description: str
    uses_gpu: bool = False
    configurable: bool = True  # False: only made by expanding a fusion_grid, never named in a config
    reads: Literal["features", "embeddings", "predictions"] = "features"
    sequences: bool = False
    slices: bool = False
    default_tasks: tuple[str, ...] = ()
    reference: Literal["inputs", "unimodal"] = "inputs"
    report_notes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


_REGISTRY: Registry[HeadType] = Registry("head type")


def register_head(entry: HeadType) -> HeadType:
    """Add a head type; its name must be new."""
    return _REGISTRY.add(entry.name, entry)


def get_head_type(name: str) -> HeadType:
    return _REGISTRY.get(name)


def list_head_types(**where: Any) -> list[str]:
    """The names of the registered types, sorted; ``where`` keeps those whose fields have these
    values, e.g. ``list_head_types(uses_gpu=True)``."""
    return sorted(e.name for e in _REGISTRY.values() if all(getattr(e, k) == v for k, v in where.items()))


def build_head(spec: Mapping[str, Any], tasks: Sequence[str]) -> Any:
    """An unfitted head of ``spec["type"]`` (its class imported now, not before)."""
    module, name = get_head_type(spec["type"]).target.split(":")
    return getattr(importlib.import_module(module), name)(spec, list(tasks))


# --- the built-in types -------------------------------------------------------------------------

RSNA_EXAM_LABELS = (
    "negative_exam_for_pe", "indeterminate", "chronic_pe", "acute_and_chronic_pe", "central_pe",
    "leftsided_pe", "rightsided_pe", "rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1",
)  # fmt: skip

register_head(HeadType(
    "dsaf", "medflow.heads.dsaf:DSAFHead", uses_gpu=True,
    description="DSAF attention fusion of the image feature vectors (and the clinical variables for DSAF-3).",
    report_notes={"variant": {
        "published": "Variant published: the published wiring; its self-attention runs over a single token, which "
                     "makes each attention block equal to its value projection. The modality weights are trained.",
        "tokens": "Variant tokens (medflow): each modality is a token and attention runs across the modality tokens "
                  "with learned gates.",
    }},
))  # fmt: skip
register_head(HeadType(
    "svm", "medflow.heads.classical:SVMHead",
    "Support-vector machine (linear kernel, Platt-scaled probabilities) on the concatenated inputs.",
))
register_head(HeadType("rf", "medflow.heads.classical:RandomForestHead", "Random forest on the concatenated inputs."))
register_head(HeadType(
    "gbdt", "medflow.heads.classical:GradientBoostingHead", "Gradient-boosted decision trees on the concatenated inputs.",
))
# the one classical head that fits on a GPU when it gets one
register_head(HeadType(
    "xgboost", "medflow.heads.classical:XGBoostHead", "XGBoost on the concatenated inputs.", uses_gpu=True,
))
register_head(HeadType(
    "logreg", "medflow.heads.classical:LogisticRegressionHead",
    "L2-regularised logistic regression on the concatenated inputs.",
))
register_head(HeadType(
    "lstm_image", "medflow.heads.sequence:ImageLSTM", uses_gpu=True, sequences=True, slices=True,
    description="LSTM over the per-slice features in stack order, one output per slice.",
))
register_head(HeadType(
    "lstm_study", "medflow.heads.sequence:StudyLSTM", uses_gpu=True, sequences=True, default_tasks=RSNA_EXAM_LABELS,
    description="LSTM over the per-slice features, pooled to one study vector, one output per exam label.",
))
register_head(HeadType(
    "ehr_unimodal", "medflow.heads.ehr:EHRHead", "One modality's encoder and a linear classifier.",
    uses_gpu=True, configurable=False,
))
register_head(HeadType(
    "ehr_early", "medflow.heads.ehr:EHRHead", uses_gpu=True, configurable=False, reads="embeddings",
    reference="unimodal",
    description="Early fusion: the unimodal models' frozen embeddings, concatenated, then an MLP.",
))
register_head(HeadType(
    "ehr_joint", "medflow.heads.ehr:EHRHead", uses_gpu=True, configurable=False, reference="unimodal",
    description="Joint fusion: the modality encoders trained end to end on the concatenation.",
))
register_head(HeadType(
    "ehr_late", "medflow.heads.late:LateFusionHead", configurable=False, reads="predictions", reference="unimodal",
    description="Late fusion: the mean of the unimodal models' probabilities.",
))
