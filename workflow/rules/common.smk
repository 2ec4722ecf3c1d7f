import json
from pathlib import Path

import medflow
from medflow.config import (
    IMAGE_KINDS,
    TABLE_KINDS,
    ConfigError,
    check_config,
    fingerprint,
    ingest_spec,
    ingest_suffix,
    manifest_view,
    modalities_of_kind,
    report_view,
    stratify_label,
    spec_for,
)
from medflow.stages import STAGE_VERSIONS
from medflow.train.devices import gpu_requests_enabled

try:
    CHECKED = check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

STUDIES = CHECKED["studies"]
# `--resources gpu=N` caps jobs that request a GPU. On a machine without one those jobs run on the
# CPU, and requesting the GPU would only serialise them; `gpu_requests: always` is for cluster
# profiles, where the submitting host has no GPU but the compute nodes do.
REQUEST_GPUS = gpu_requests_enabled(CHECKED["gpu_requests"])
RESULTS = CHECKED["results"]
RESOURCES = CHECKED["resources"]
ENV = "../../envs/medflow.yaml"


def memory_mb(first_try):
    """A rule's ``mem_mb``: enough for the demo and typical cohorts on the first try, doubled on each
    retry, so a cluster job killed for memory comes back with more under ``--retries``."""

    def mem_mb(wildcards, attempt):
        return first_try * 2 ** (attempt - 1)

    return mem_mb


def _names_regex(names):
    return "|".join(sorted(set(names))) or "(?!x)x"


wildcard_constraints:
    study=_names_regex(STUDIES),
    image_modality=_names_regex(m for s in STUDIES.values() for m in modalities_of_kind(s, IMAGE_KINDS)),
    table_modality=_names_regex(m for s in STUDIES.values() for m in modalities_of_kind(s, TABLE_KINDS)),


def study_of(wildcards):
    return STUDIES[wildcards.study]


def modality_spec(wildcards):
    """The modality's spec for ingest, with the study's observation window (window_hours) in it."""
    modality = getattr(wildcards, "image_modality", None) or wildcards.table_modality
    study = STUDIES[wildcards.study]
    if modality not in study["modalities"]:
        raise WorkflowError(
            f"study {wildcards.study!r} has no modality {modality!r}; "
            f"its modalities: {', '.join(study['modalities'])}"
        )
    return ingest_spec(study, modality)


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
        out += stage2_targets(study)
        out += report_targets(study)
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
    return stage1_spec(wildcards).get("label") or stratify_label(study)


def stage1_ingest(wildcards):
    modality = stage1_spec(wildcards)["modality"]
    return f"{RESULTS}/{wildcards.study}/ingest/{modality}.h5"


def stage1_encoder(wildcards):
    """The pre-trained encoder a model's classifier starts from (none without pre-training); fold k
    starts from its own, pre-trained without fold k."""
    if stage1_spec(wildcards).get("pretrain", "none") == "none":
        return []
    fold = getattr(wildcards, "fold", None)
    part = f"fold{fold}/pretrain" if fold is not None else "pretrain"
    return f"{RESULTS}/{wildcards.study}/stage1/{wildcards.model}/{part}/model.pt"


def fold_predictions(wildcards):
    folds = STUDIES[wildcards.study]["split"]["folds"]
    return [f"{RESULTS}/{wildcards.study}/stage1/{wildcards.model}/fold{k}/predictions.csv" for k in range(folds)]


def stage1_gpus(wildcards):
    return stage1_ranks(wildcards) if REQUEST_GPUS else 0


def stage1_inference_gpus(wildcards):
    """Feature extraction runs in one process: at most one GPU."""
    return min(1, stage1_gpus(wildcards))


def stage1_ranks(wildcards):
    """Data-parallel ranks of a stage-1 job: ``gpus: N`` trains on N GPUs, or N gloo ranks on the CPU
    (a resource, not a param: the same training split differently must not rerun it)."""
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


# --- encoders and stage 2 ----------------------------------------------------------------------

from medflow.heads.specs import NEURAL_TYPES, expand_heads, input_files

HEADS = {study: expand_heads(STUDIES[study]) for study in STUDIES}
UNIMODAL_HEADS = [h for s in HEADS.values() for h, spec in s.items() if spec["type"] == "ehr_unimodal"]
OTHER_HEADS = [h for s in HEADS.values() for h, spec in s.items() if spec["type"] != "ehr_unimodal"]


wildcard_constraints:
    encoder=_escaped([e for s in STUDIES.values() for e in s.get("encoders", {})]),
    head=_escaped([h for s in HEADS.values() for h in s]),


def encoder_spec(wildcards):
    return STUDIES[wildcards.study]["encoders"][wildcards.encoder]


def encoder_table(wildcards):
    return f"{RESULTS}/{wildcards.study}/ingest/{encoder_spec(wildcards)['modality']}.parquet"


def encoder_window(wildcards):
    """The study's observation window (check_config makes sure a study with an events encoder has one)."""
    return STUDIES[wildcards.study].get("window_hours")


def head_spec(wildcards):
    return HEADS[wildcards.study][wildcards.head]


def head_files(wildcards):
    return input_files(STUDIES[wildcards.study], head_spec(wildcards), f"{RESULTS}/{wildcards.study}")


def head_inputs(wildcards):
    """Every file the head reads, named by role and input (``features_cxr-resnet18``...)."""
    out = {
        "splits": f"{RESULTS}/{wildcards.study}/splits.csv",
        "manifest": f"{RESULTS}/{wildcards.study}/manifest.csv",
    }
    for role, named in head_files(wildcards).items():
        for name, path in named.items():
            out[f"{role}_{name}"] = path
    return out


def head_gpus(wildcards):
    spec = head_spec(wildcards)
    return spec.get("gpus", 1) if spec["type"] in NEURAL_TYPES and REQUEST_GPUS else 0


def stage2_targets(study):
    return [f"{RESULTS}/{study}/stage2/{head}/predictions.csv" for head in HEADS[study]]


# --- evaluation and reports -----------------------------------------------------------------------

from medflow.report.targets import model_kinds, reference_models

EVALUATION = CHECKED.get("evaluation", {})
MODELS = {study: model_kinds(STUDIES[study], HEADS[study]) for study in STUDIES}


wildcard_constraints:
    stage="stage1|stage2",
    name=_escaped([n for s in MODELS.values() for n in s]),


def model_dir(study, name):
    return f"{RESULTS}/{study}/{MODELS[study][name]}/{name}"


def model_label(study, name):
    kind = MODELS[study][name]
    if kind == "stage1":
        spec = STUDIES[study]["stage1"][name]
        return spec.get("label") or stratify_label(STUDIES[study])
    return HEADS[study][name]["tasks"][0]


def model_spec(study, name):
    return STUDIES[study]["stage1"][name] if MODELS[study][name] == "stage1" else HEADS[study][name]


def evaluate_inputs(wildcards):
    out = {"predictions": f"{RESULTS}/{wildcards.study}/{wildcards.stage}/{wildcards.name}/predictions.csv"}
    if wildcards.stage == "stage2":
        out["info"] = f"{RESULTS}/{wildcards.study}/stage2/{wildcards.name}/head.json"
        image_head = HEADS[wildcards.study][wildcards.name].get("image_head")
        if image_head:  # its slice_predictions.csv is written beside this predictions.csv
            out["image_head"] = f"{RESULTS}/{wildcards.study}/stage2/{image_head}/predictions.csv"
    return out


def problem_files(study):
    return [f"{RESULTS}/{study}/ingest/{m}.problems.csv" for m in STUDIES[study]["modalities"]]


def report_inputs(wildcards):
    study, name = wildcards.study, wildcards.name
    base = model_dir(study, name)
    out = {
        "predictions": f"{base}/predictions.csv",
        "metrics": f"{base}/metrics.json",
        "splits": f"{RESULTS}/{study}/splits.csv",
        "manifest": f"{RESULTS}/{study}/manifest.csv",
        "cohort": f"{RESULTS}/{study}/cohort.json",
        "problems": problem_files(study),
    }
    if MODELS[study][name] == "stage2":
        out["info"] = f"{base}/head.json"
        out["excluded"] = f"{base}/excluded.csv"
    else:
        out["history"] = f"{base}/history.csv" if not uses_folds(study) else []
        out["model"] = f"{base}/fold0/model.pt" if uses_folds(study) else f"{base}/model.pt"
        out["ingest"] = f"{RESULTS}/{study}/ingest/{STUDIES[study]['stage1'][name]['modality']}.h5"
    refs = reference_models(STUDIES[study], HEADS[study], name)
    out["references"] = [f"{model_dir(study, r)}/predictions.csv" for r in refs]
    return out


def report_targets(study):
    return [f"{RESULTS}/{study}/{name}_report.html" for name in MODELS[study]] + [f"{RESULTS}/{study}/report.html"]
