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
    modalities_of_kind,
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
    return out
