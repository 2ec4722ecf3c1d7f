"""The workflow configuration: schema validation with messages that name the key and what is allowed,
the cross-field checks a JSON schema cannot express, and the look-ups the Snakefile needs."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from medflow.heads.specs import expand_heads, grid_problems
from medflow.io.hashing import sha256_json
from medflow.study import IMAGE_KINDS

SPLIT_NAMES = ("train", "val", "test", "external")
VOLUME_MODELS = ("se_resnext50_3d",)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is allowed."""


def load_schema() -> dict[str, Any]:
    text = resources.files("medflow").joinpath("schemas/config.schema.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _key_path(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: ValidationError) -> str:
    where = _key_path(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        return f"{where}: unknown key(s) {', '.join(map(repr, extra))}; allowed keys: {', '.join(allowed)}"
    if kind == "enum":
        return f"{where} = {error.instance!r} is not allowed; allowed values: {', '.join(map(str, error.validator_value))}"
    if kind == "required":
        return f"{where}: {error.message}"
    if kind == "propertyNames":
        return f"{where}: invalid name {error.instance!r} (use lower-case letters, digits and _)"
    if kind == "pattern":
        return f"{where} = {error.instance!r} does not match the pattern {error.validator_value!r}"
    if kind == "type":
        return f"{where} = {error.instance!r} must be of type {error.validator_value}"
    return f"{where}: {error.message}"


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in the schema's defaults (as Snakemake's ``validate`` does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``config`` and return a copy with defaults filled in; raise ConfigError listing every problem."""
    config = copy.deepcopy(dict(config))
    moved = _moved_settings(config)
    validator = _with_defaults(Draft202012Validator)(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors or moved:
        lines = moved + sorted({_describe(e) for e in errors})
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(lines))
    problems = _unregistered_names(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    problems = [msg for name, study in config["studies"].items() for msg in _study_problems(name, study)]
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def _unregistered_names(config: Mapping[str, Any]) -> list[str]:
    """Head types, cohort sources and demo templates are checked against their registries, the one
    list of each (the schema only says they are strings)."""
    from medflow.cohort.demo import list_templates
    from medflow.cohort.importers import list_importers
    from medflow.heads.registry import list_head_types

    heads = [*list_head_types(configurable=True), "fusion_grid"]
    sources = ["demo", "manifest", *list_importers()]
    out: list[str] = []
    for name, study in config["studies"].items():
        cohort = study["cohort"]
        if cohort["source"] not in sources:
            out.append(f"studies.{name}.cohort.source = {cohort['source']!r} is not allowed; "
                       f"allowed values: {', '.join(sources)}")
        template = cohort.get("template", name) if cohort["source"] == "demo" else None
        if template is not None and template not in list_templates():
            key = "template" if "template" in cohort else "template (default: the study's name)"
            out.append(f"studies.{name}.cohort.{key} = {template!r} is not a demo template; "
                       f"allowed values: {', '.join(list_templates())}")
        for head, spec in study.get("stage2", {}).items():
            if spec["type"] not in heads:
                out.append(f"studies.{name}.stage2.{head}.type = {spec['type']!r} is not allowed; "
                           f"allowed values: {', '.join(heads)}")
    return out


def _moved_settings(config: dict[str, Any]) -> list[str]:
    """Settings that moved to another level, with where they go now; taken out of ``config`` (a copy)
    so that the schema does not report them a second time as unknown keys."""
    out: list[str] = []
    studies = config.get("studies")
    for name, study in (studies.items() if isinstance(studies, dict) else ()):
        modalities = study.get("modalities") if isinstance(study, dict) else None
        for mod, spec in (modalities.items() if isinstance(modalities, dict) else ()):
            if isinstance(spec, dict) and "window_hours" in spec:
                value = spec.pop("window_hours")
                out.append(
                    f"studies.{name}.modalities.{mod}.window_hours: the observation window is a study setting: "
                    f"move it to studies.{name}.window_hours (window_hours: {value}); it applies to every "
                    f"modality of the study (events, notes and time-stamped images alike)"
                )
    return out


def _window_problems(where: str, study: dict[str, Any]) -> list[str]:
    """The observation window (``window_hours``): what needs it, and the manifest columns it adds."""
    out: list[str] = []
    for name, spec in study.get("encoders", {}).items():
        if spec["type"] == "events" and study.get("window_hours") is None:
            out.append(
                f"{where}.encoders.{name}: an events encoder needs the study's observation window "
                f"(its time grid spans [0, window_hours]): set {where}.window_hours"
            )
    names = set(study["labels"]) | set(study["modalities"]) | set(study["cohort"].get("extra_columns", []))
    for col in time_columns(study):
        if col in names:
            out.append(f"{where}: {col!r} is the acquisition-time column of modality {col[: -len('_hours')]!r}; "
                       f"rename the label, modality or extra column of that name")
    return out


def _study_problems(name: str, study: dict[str, Any]) -> list[str]:
    where = f"studies.{name}"
    out: list[str] = []
    labels = study["labels"]
    for label in study.get("labels_optional", []):
        if label not in labels:
            out.append(f"{where}.labels_optional: {label!r} is not one of labels {labels}")
    split = study["split"]
    stratify = split.get("stratify")
    if stratify is not None and stratify not in labels:
        out.append(f"{where}.split.stratify = {stratify!r} is not one of the study's labels: {', '.join(labels)}")
    total = sum(split["fractions"].values())
    if abs(total - 1.0) > 1e-6:
        out.append(f"{where}.split.fractions must add up to 1 (they add up to {total:g})")
    if split["fractions"]["test"] <= 0 and not split.get("external_centers"):
        out.append(f"{where}.split.fractions.test is 0 and no external_centers: nothing would be held out")
    if split["folds"] == 1:
        out.append(f"{where}.split.folds = 1 is not a cross-validation; use 0 (no folds) or >= 2")
    if split["folds"] > 1 and split["fractions"]["val"] > 0:
        out.append(f"{where}.split.fractions.val must be 0 with folds: each fold is the validation data of its model")
    if split["folds"] == 0 and split["fractions"]["val"] <= 0:
        out.append(f"{where}.split.fractions.val is 0 without folds: no validation data for model selection")
    modalities = study["modalities"]
    for mod, spec in modalities.items():
        kind = spec["kind"]
        size = spec.get("size")
        if size is not None:
            want = 3 if kind == "volume" else 2
            if len(size) != want:
                out.append(f"{where}.modalities.{mod}.size must have {want} numbers for kind {kind}, not {size}")
        for key, kinds in (("mask", ("volume",)), ("mask_roi", ("volume",)), ("slice_labels", ("slices",)),
                           ("file", ("table", "events"))):
            if key in spec and kind not in kinds:
                out.append(f"{where}.modalities.{mod}.{key} is only allowed for kind {' or '.join(kinds)}")
        if "mask_roi" in spec and "mask" not in spec:
            out.append(f"{where}.modalities.{mod}.mask_roi needs a mask column (mask)")
        if "window" in spec and spec["window"][0] >= spec["window"][1]:
            out.append(f"{where}.modalities.{mod}.window must be [low, high] with low < high")
        if spec.get("mask") in modalities or spec.get("mask") in labels:
            out.append(f"{where}.modalities.{mod}.mask = {spec['mask']!r} clashes with a modality or label name")
    clashes = set(labels) & set(modalities)
    if clashes:
        out.append(f"{where}: names used both as label and modality: {', '.join(sorted(clashes))}")
    image_modalities = modalities_of_kind(study, IMAGE_KINDS)
    for model_name, model in study.get("stage1", {}).items():
        at = f"{where}.stage1.{model_name}"
        mod = model.get("modality")
        if mod not in image_modalities:
            out.append(f"{at}.modality = {mod!r} is not an image modality of the study: {', '.join(image_modalities)}")
            continue
        kind = modalities[mod]["kind"]
        if (model["model"] in VOLUME_MODELS) != (kind == "volume"):
            need = "a 3D network (" + ", ".join(VOLUME_MODELS) + ")" if kind == "volume" else "a 2D network"
            out.append(f"{at}.model = {model['model']!r} does not fit modality {mod!r} of kind {kind}: use {need}")
        if model.get("label") is not None and model["label"] not in labels:
            out.append(f"{at}.label = {model['label']!r} is not one of the study's labels: {', '.join(labels)}")
        if model.get("pretrain", "none") != "none" and kind not in ("image", "patches"):
            out.append(f"{at}.pretrain = {model['pretrain']!r} is only available for 2D images (kind image or patches)")
        if model.get("pretrain", "none") != "none" and not model.get("augment"):
            out.append(f"{at}.augment is empty: contrastive pre-training needs augmentations to make two views")
    encoders = study.get("encoders", {})
    for name, spec in encoders.items():
        kind = modalities.get(spec["modality"], {}).get("kind")
        want = "events" if spec["type"] == "events" else "notes"
        if kind != want:
            out.append(f"{where}.encoders.{name}.modality = {spec['modality']!r} must be a modality of kind {want}")
        if name in study.get("stage1", {}):
            out.append(f"{where}.encoders.{name}: the name is also a stage1 model (both write features/{name}.h5)")
    table_like = set(modalities_of_kind(study, ("table",)))
    known_inputs = set(study.get("stage1", {})) | table_like | set(encoders)
    for head, spec in study.get("stage2", {}).items():
        items = list(spec.get("inputs", [])) + list((spec.get("modalities") or {}).values())
        if spec["type"] != "fusion_grid" and not spec.get("inputs"):
            out.append(f"{where}.stage2.{head}.inputs is missing: name the stage1 models / tables it reads")
        for item in items:
            if item not in known_inputs:
                out.append(
                    f"{where}.stage2.{head}: input {item!r} is neither a stage1 model, an encoder nor a table "
                    f"modality (known: {', '.join(sorted(known_inputs))})"
                )
        for task in spec.get("tasks", []):
            if task not in labels:
                out.append(f"{where}.stage2.{head}.tasks: {task!r} is not one of the study's labels")
    out += _window_problems(where, study)
    out += grid_problems(study, where)
    if out:
        return out
    heads = expand_heads(study)
    clash = sorted(set(heads) & set(study.get("stage1", {})))
    if clash:
        out.append(f"{where}: {', '.join(clash)} name both a stage1 model and a stage2 head (reports share names)")
    for head, spec in study.get("stage2", {}).items():
        unknown = [r for r in spec.get("compare_to", []) if r not in heads and r not in study.get("stage1", {})]
        if unknown:
            out.append(f"{where}.stage2.{head}.compare_to: {', '.join(map(repr, unknown))} are not models of the study")
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it (defaults filled in)."""
    with open(path, encoding="utf-8") as fh:
        return check_config(yaml.safe_load(fh) or {})


# --- look-ups used by the Snakefile and the CLI --------------------------------------------------


def modalities_of_kind(study: Mapping[str, Any], kinds: Iterable[str]) -> list[str]:
    kinds = tuple(kinds)
    return [m for m, spec in study["modalities"].items() if spec["kind"] in kinds]


def ingest_suffix(kind: str) -> str:
    """File suffix of a modality's ingest output: HDF5 for pixels, parquet for tables."""
    return ".h5" if kind in IMAGE_KINDS else ".parquet"


def container_columns(study: Mapping[str, Any]) -> list[str]:
    """Manifest columns whose cells are container references (``file.hdf5#row``): ``patches`` modalities."""
    return [mod for mod, spec in study["modalities"].items() if spec["kind"] == "patches"]


def path_columns(study: Mapping[str, Any]) -> list[str]:
    """Manifest columns that hold file paths: every non-table modality, plus mask columns."""
    cols: list[str] = []
    for mod, spec in study["modalities"].items():
        if spec["kind"] in ("table", "events"):
            continue
        cols.append(mod)
        if spec.get("mask"):
            cols.append(spec["mask"])
    return cols


def time_column(modality: str) -> str:
    """The optional manifest column with the hours since admission an image modality was acquired at."""
    return f"{modality}_hours"


def time_columns(study: Mapping[str, Any]) -> list[str]:
    """The acquisition-time columns the manifest of ``study`` may have: one per image modality."""
    return [time_column(m) for m in modalities_of_kind(study, IMAGE_KINDS)]


def ingest_spec(study: Mapping[str, Any], modality: str) -> dict[str, Any]:
    """What ingest gets for ``modality``: its spec plus the study's observation window
    (``window_hours``, only when the study has one), which ingest applies to every kind."""
    spec = dict(study["modalities"][modality])
    if study.get("window_hours") is not None:
        spec["window_hours"] = study["window_hours"]
    return spec


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object (used to make params change when config changes)."""
    return sha256_json(obj)[:16]


# The parts of a stage-1 model's spec each of its jobs depends on: a rule's params carry only these,
# so a change to the classifier's training does not rerun the contrastive pre-training.
PRETRAIN_KEYS = ("modality", "model", "pretrain", "temperature", "weights", "mask", "intensity", "augment",
                 "pretrain_train")  # fmt: skip
TRAIN_KEYS = (*PRETRAIN_KEYS, "label", "sampler", "train")


def spec_for(job: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a stage-1 spec that job ``pretrain`` or ``train`` depends on."""
    keys = PRETRAIN_KEYS if job == "pretrain" else TRAIN_KEYS
    return {k: spec[k] for k in keys if k in spec}


def manifest_view(study: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a study's config that manifest validation reads (so that, e.g., a change to a
    stage-1 model does not rerun validation and everything after it)."""
    keys = ("labels", "labels_optional", "modalities", "cohort", "window_hours")
    return {k: study[k] for k in keys if k in study}


def report_view(study: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a study's config its reports print (so that a change to one model reruns that
    model's report, not every report of the study)."""
    keys = ("description", "sample_unit", "labels", "modalities", "split", "cohort")
    return {k: study[k] for k in keys if k in study}
