import json
from pathlib import Path

import medflow
from medflow.config import (
    IMAGE_KINDS,
    TABLE_KINDS,
    ConfigError,
    check_config,
    fingerprint,
    ingest_suffix,
    manifest_view,
    modalities_of_kind,
    spec_for,
)
from medflow.stages import STAGE_VERSIONS

try:
    CHECKED = check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

STUDIES = CHECKED["studies"]
RESULTS = CHECKED["results"]
RESOURCES = CHECKED["resources"]
ENV = "../../envs/medflow.yaml"


def _names_regex(names):
    return "|".join(sorted(set(names))) or "(?!x)x"


wildcard_constraints:
    study=_names_regex(STUDIES),
    image_modality=_names_regex(m for s in STUDIES.values() for m in modalities_of_kind(s, IMAGE_KINDS)),
    table_modality=_names_regex(m for s in STUDIES.values() for m in modalities_of_kind(s, TABLE_KINDS)),


def study_of(wildcards):
    return STUDIES[wildcards.study]


def modality_spec(wildcards):
    modality = getattr(wildcards, "image_modality", None) or wildcards.table_modality
    study = STUDIES[wildcards.study]
    if modality not in study["modalities"]:
        raise WorkflowError(
            f"study {wildcards.study!r} has no modality {modality!r}; "
            f"its modalities: {', '.join(study['modalities'])}"
        )
    return study["modalities"][modality]


def source_manifest(wildcards):
    """The manifest a study's cohort starts from: generated, imported, or the user's own."""
    cohort = STUDIES[wildcards.study]["cohort"]
    if cohort["source"] == "demo":
        return f"{RESOURCES}/demo/{wildcards.study}/manifest.csv"
    if cohort["source"] == "manifest":
        return cohort["path"]
    return f"{RESOURCES}/imported/{wildcards.study}/manifest.csv"


def import_source(wildcards):
    """The public-layout file the importer reads (tracked, so a new download reruns the import)."""
    cohort = STUDIES[wildcards.study]["cohort"]
    if cohort["source"] == "rsna-pe":
        return str(Path(cohort["path"]) / "train.csv")
    return cohort["path"]


def ingest_targets(study):
    spec = STUDIES[study]["modalities"]
    out = []
    for modality, mod in spec.items():
        out.append(f"{RESULTS}/{study}/ingest/{modality}{ingest_suffix(mod['kind'])}")
        out.append(f"{RESULTS}/{study}/ingest/{modality}.problems.csv")
    return out


def all_targets():
    out = []
    for study in STUDIES:
        out += ingest_targets(study)
        out.append(f"{RESULTS}/{study}/splits.csv")
        out += stage1_targets(study)
    return out


# --- stage 1 -----------------------------------------------------------------------------------


def _escaped(names):
    import re

    return "|".join(re.escape(n) for n in sorted(set(names))) or "(?!x)x"


def uses_folds(study):
    return STUDIES[study]["split"]["folds"] > 0


def stage1_spec(wildcards):
    return STUDIES[wildcards.study]["stage1"][wildcards.model]


def stage1_label(wildcards):
    study = STUDIES[wildcards.study]
    return stage1_spec(wildcards).get("label") or study["split"].get("stratify") or study["labels"][0]


def stage1_ingest(wildcards):
    modality = stage1_spec(wildcards)["modality"]
    return f"{RESULTS}/{wildcards.study}/ingest/{modality}.h5"


def stage1_encoder(wildcards):
    """The pre-trained encoder a model's classifier starts from (none without pre-training)."""
    if stage1_spec(wildcards).get("pretrain", "none") == "none":
        return []
    return f"{RESULTS}/{wildcards.study}/stage1/{wildcards.model}/pretrain/model.pt"


def fold_predictions(wildcards):
    folds = STUDIES[wildcards.study]["split"]["folds"]
    return [f"{RESULTS}/{wildcards.study}/stage1/{wildcards.model}/fold{k}/predictions.csv" for k in range(folds)]


def stage1_gpus(wildcards):
    return stage1_spec(wildcards).get("gpus", 1)


def stage1_targets(study):
    out = []
    for name, spec in STUDIES[study]["stage1"].items():
        out.append(f"{RESULTS}/{study}/stage1/{name}/predictions.csv")
        if spec.get("features", True) and not uses_folds(study):
            out.append(f"{RESULTS}/{study}/features/{name}.h5")
    return out


FOLD_MODELS = [m for s in STUDIES if uses_folds(s) for m in STUDIES[s]["stage1"]]
SINGLE_MODELS = [m for s in STUDIES if not uses_folds(s) for m in STUDIES[s]["stage1"]]


wildcard_constraints:
    model=_escaped([m for s in STUDIES.values() for m in s["stage1"]]),
    fold=r"\d+",
