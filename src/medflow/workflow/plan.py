"""What the workflow builds for a checked config, and what each of its jobs reads.

``Plan`` answers the rules' questions: the targets of ``rule all``, the wildcard constraints, and the
input functions, params and resources of a job, each a function of the checked config and the job's
wildcards (any object with the wildcards as attributes). Paths come from the ``Layout``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from medflow.cohort.importers import tracked_input
from medflow.config import ingest_spec, modalities_of_kind
from medflow.heads.specs import NEURAL_TYPES, expand_heads, input_files
from medflow.report.oracle import model_modalities
from medflow.report.targets import model_kinds, reference_models
from medflow.study import IMAGE_KINDS, TABLE_KINDS, stratify_label
from medflow.workflow.layout import Layout

# snakemake.io.Wildcards: one attribute per wildcard of the job.
Wildcards = Any


def names_regex(names: Iterable[str]) -> str:
    """A wildcard constraint that allows exactly ``names``."""
    # With no names, an empty pattern would match the empty string: this one matches nothing.
    return "|".join(re.escape(n) for n in sorted(set(names))) or "(?!x)x"


def memory_mb(first_try: int) -> Callable[[Wildcards, int], int]:
    """A rule's ``mem_mb``: enough for the demo and typical cohorts on the first try, doubled on each
    retry, so a cluster job killed for memory comes back with more under ``--retries``."""

    def mem_mb(wildcards: Wildcards, attempt: int) -> int:
        return first_try * 2 ** (attempt - 1)

    return mem_mb


# cohort keys that are not an importer's options (run_importer drops options an importer does not take)
_NOT_IMPORT_OPTIONS = frozenset({"source", "path", "template", "patients", "image_size", "seed", "extra_columns"})


class Plan:
    """The checked config, looked up the way the rules need it (built once per workflow run)."""

    def __init__(self, checked: Mapping[str, Any], request_gpus: bool) -> None:
        """``request_gpus``: whether jobs that can use a GPU ask Snakemake for one (``--resources
        gpu=N`` then caps them)."""
        self.studies: Mapping[str, Any] = checked["studies"]
        self.layout = Layout(results=checked["results"], resources=checked["resources"])
        self.request_gpus = request_gpus
        self.threads_per_gpu: int = checked["threads_per_gpu"]
        self.heads = {name: expand_heads(study) for name, study in self.studies.items()}
        # name → stage1/stage2: networks and heads share the report namespace of their study
        self.models = {name: model_kinds(study, self.heads[name]) for name, study in self.studies.items()}

    def uses_folds(self, study: str) -> bool:
        return self.studies[study]["split"]["folds"] > 0

    # --- targets and wildcard constraints --------------------------------------------------------

    def all_targets(self) -> list[str]:
        return [path for study in self.studies for path in self.study_targets(study)]

    def study_targets(self, study: str) -> list[str]:
        """Everything of one study: ingests with their problems, splits, every model's predictions
        (and a network's features where heads can read them), every report."""
        layout, spec = self.layout, self.studies[study]
        out = []
        for modality, mod in spec["modalities"].items():
            out += [layout.ingest(study, modality, mod["kind"]), layout.problems(study, modality)]
        out.append(layout.splits(study))
        for name, model in spec["stage1"].items():
            out.append(layout.predictions(study, "stage1", name))
            if model.get("features", True) and not self.uses_folds(study):
                out.append(layout.features(study, name))
        out += [layout.predictions(study, "stage2", head) for head in self.heads[study]]
        out += [layout.model_report(study, name) for name in self.models[study]]
        out.append(layout.study_report(study))
        return out

    def wildcard_constraints(self) -> dict[str, str]:
        """Every wildcard of the rules, limited to the names the config has (a typo in a target
        then matches no rule instead of the wrong one)."""
        studies = list(self.studies.values())
        return {
            "study": names_regex(self.studies),
            "image_modality": names_regex(m for s in studies for m in modalities_of_kind(s, IMAGE_KINDS)),
            "table_modality": names_regex(m for s in studies for m in modalities_of_kind(s, TABLE_KINDS)),
            "model": names_regex(m for s in studies for m in s["stage1"]),
            "fold": r"\d+",
            "encoder": names_regex(e for s in studies for e in s.get("encoders", {})),
            "head": names_regex(h for heads in self.heads.values() for h in heads),
            "stage": "stage1|stage2",
            "name": names_regex(n for models in self.models.values() for n in models),
        }

    def stage1_models(self, folds: bool) -> list[str]:
        """The networks of the studies with (``folds``) or without cross-validation: their rules
        write the same predictions.csv, and these lists tell them apart."""
        return [m for s in self.studies if self.uses_folds(s) == folds for m in self.studies[s]["stage1"]]

    def stage2_heads(self, unimodal: bool) -> list[str]:
        """The unimodal EHR heads (they also write embeddings), or every other head."""
        return [h for heads in self.heads.values() for h, spec in heads.items()
                if (spec["type"] == "ehr_unimodal") == unimodal]

    # --- cohorts and ingest ----------------------------------------------------------------------

    def source_manifest(self, wildcards: Wildcards) -> str:
        """The manifest a study's cohort starts from: generated, imported, or the user's own."""
        cohort = self.studies[wildcards.study]["cohort"]
        if cohort["source"] == "manifest":
            return cohort["path"]
        return self.layout.manifest(wildcards.study, "demo" if cohort["source"] == "demo" else "imported")

    def import_source(self, wildcards: Wildcards) -> str:
        """The public-layout file the importer reads (tracked, so a new download reruns the import)."""
        cohort = self.studies[wildcards.study]["cohort"]
        return tracked_input(cohort["source"], cohort)

    def import_options(self, wildcards: Wildcards) -> dict[str, Any]:
        """The cohort settings an importer may take as keyword options (``cxr_path``, ``encoding``, …):
        everything of ``cohort:`` but where it comes from and the demo's and manifest's own keys, and
        the study's ``window_hours``."""
        study = self.studies[wildcards.study]
        options = {k: v for k, v in sorted(study["cohort"].items()) if k not in _NOT_IMPORT_OPTIONS}
        if study.get("window_hours") is not None:  # the study's observation window, for importers that cut by time
            options["window_hours"] = study["window_hours"]
        return options

    def modality_spec(self, wildcards: Wildcards) -> dict[str, Any]:
        """The modality's spec for ingest, with the study's observation window (window_hours) in it."""
        modality = getattr(wildcards, "image_modality", None) or wildcards.table_modality
        study = self.studies[wildcards.study]
        if modality not in study["modalities"]:
            raise ValueError(
                f"study {wildcards.study!r} has no modality {modality!r}; "
                f"its modalities: {', '.join(study['modalities'])}"
            )
        return ingest_spec(study, modality)

    # --- stage 1 ---------------------------------------------------------------------------------

    def stage1_spec(self, wildcards: Wildcards) -> dict[str, Any]:
        return self.studies[wildcards.study]["stage1"][wildcards.model]

    def label(self, study: str, name: str) -> str:
        """The label a model predicts (a head: its first task)."""
        if self.models[study][name] == "stage1":
            return self.studies[study]["stage1"][name].get("label") or stratify_label(self.studies[study])
        return self.heads[study][name]["tasks"][0]

    def stage1_label(self, wildcards: Wildcards) -> str:
        return self.label(wildcards.study, wildcards.model)

    def _stage1_ingest(self, study: str, model: str) -> str:
        modality = self.studies[study]["stage1"][model]["modality"]
        return self.layout.ingest(study, modality, self.studies[study]["modalities"][modality]["kind"])

    def stage1_inputs(self, wildcards: Wildcards) -> dict[str, str]:
        """What every job of a stage-1 network reads: its ingested images, the splits and the labels."""
        study = wildcards.study
        return {
            "data": self._stage1_ingest(study, wildcards.model),
            "splits": self.layout.splits(study),
            "manifest": self.layout.manifest(study),
        }

    def stage1_encoder(self, wildcards: Wildcards) -> str | list[str]:
        """The pre-trained encoder a network's classifier starts from (none without pre-training);
        fold k starts from its own, pre-trained without fold k."""
        if self.stage1_spec(wildcards).get("pretrain", "none") == "none":
            return []
        fold = getattr(wildcards, "fold", None)
        return self.layout.stage1_model(wildcards.study, wildcards.model, fold, pretrain=True)

    def fold_predictions(self, wildcards: Wildcards) -> list[str]:
        """Each fold's predictions, fold k k-th (the fold ensemble reads the fold numbers from this order)."""
        folds = self.studies[wildcards.study]["split"]["folds"]
        return [self.layout.predictions(wildcards.study, "stage1", wildcards.model, k) for k in range(folds)]

    def stage1_ranks(self, wildcards: Wildcards) -> int:
        """Data-parallel ranks of a stage-1 job: ``gpus: N`` trains on N GPUs, or N gloo ranks on the CPU
        (a resource, not a param: the same training split differently must not rerun it)."""
        return self.stage1_spec(wildcards).get("gpus", 1)

    def stage1_gpus(self, wildcards: Wildcards) -> int:
        return self.stage1_ranks(wildcards) if self.request_gpus else 0

    def stage1_threads(self, wildcards: Wildcards) -> int:
        """Threads of a training job: ``threads_per_gpu`` for each GPU it trains on (its DataLoader
        workers follow them, see devices.loader_workers), 2 where jobs request no GPU. Snakemake
        gives a job at most ``--cores``."""
        return self._threads(self.stage1_gpus(wildcards))

    def inference_threads(self, wildcards: Wildcards) -> int:
        """Threads of a feature-extraction job (one GPU at most)."""
        return self._threads(self.stage1_inference_gpus(wildcards))

    def _threads(self, gpus: int) -> int:
        return self.threads_per_gpu * gpus if gpus else 2

    def stage1_inference_gpus(self, wildcards: Wildcards) -> int:
        """Feature extraction runs in one process: at most one GPU."""
        return min(1, self.stage1_gpus(wildcards))

    # --- encoders and stage 2 --------------------------------------------------------------------

    def encoder_spec(self, wildcards: Wildcards) -> dict[str, Any]:
        return self.studies[wildcards.study]["encoders"][wildcards.encoder]

    def encoder_table(self, wildcards: Wildcards) -> str:
        modality = self.encoder_spec(wildcards)["modality"]
        kind = self.studies[wildcards.study]["modalities"][modality]["kind"]
        return self.layout.ingest(wildcards.study, modality, kind)

    def encoder_window(self, wildcards: Wildcards) -> float | None:
        """The study's observation window (check_config makes sure a study with an events encoder has one)."""
        return self.studies[wildcards.study].get("window_hours")

    def head_spec(self, wildcards: Wildcards) -> dict[str, Any]:
        return self.heads[wildcards.study][wildcards.head]

    def head_files(self, wildcards: Wildcards) -> dict[str, dict[str, str]]:
        study = wildcards.study
        return input_files(self.studies[study], self.head_spec(wildcards), self.layout, study)

    def head_inputs(self, wildcards: Wildcards) -> dict[str, str]:
        """Every file the head reads, named by role and input (``features_cxr-resnet18``...)."""
        out = {"splits": self.layout.splits(wildcards.study), "manifest": self.layout.manifest(wildcards.study)}
        for role, named in self.head_files(wildcards).items():
            for name, path in named.items():
                out[f"{role}_{name}"] = path
        return out

    def head_gpus(self, wildcards: Wildcards) -> int:
        spec = self.head_spec(wildcards)
        return spec.get("gpus", 1) if spec["type"] in NEURAL_TYPES and self.request_gpus else 0

    # --- evaluation and reports ------------------------------------------------------------------

    def _image_head(self, wildcards: Wildcards) -> str | None:
        """The image head whose per-slice scores complete a PE exam head's evaluation."""
        if wildcards.stage != "stage2":
            return None
        return self.heads[wildcards.study][wildcards.name].get("image_head")

    def evaluate_inputs(self, wildcards: Wildcards) -> dict[str, str]:
        study, stage, name = wildcards.study, wildcards.stage, wildcards.name
        out = {"predictions": self.layout.predictions(study, stage, name)}
        if stage == "stage2":
            out["info"] = self.layout.head_file(study, name, "head.json")
        image_head = self._image_head(wildcards)
        if image_head:  # the job that writes its slice_predictions.csv
            out["image_head"] = self.layout.predictions(study, "stage2", image_head)
        return out

    def evaluate_slices(self, wildcards: Wildcards) -> str | None:
        image_head = self._image_head(wildcards)
        return self.layout.head_file(wildcards.study, image_head, "slice_predictions.csv") if image_head else None

    def model_spec(self, wildcards: Wildcards) -> dict[str, Any]:
        study, name = wildcards.study, wildcards.name
        return self.studies[study]["stage1"][name] if self.models[study][name] == "stage1" else self.heads[study][name]

    def model_label(self, wildcards: Wildcards) -> str:
        return self.label(wildcards.study, wildcards.name)

    def references(self, wildcards: Wildcards) -> list[str]:
        return reference_models(self.studies[wildcards.study], self.heads[wildcards.study], wildcards.name)

    def _problem_files(self, study: str) -> list[str]:
        return [self.layout.problems(study, m) for m in self.studies[study]["modalities"]]

    def report_inputs(self, wildcards: Wildcards) -> dict[str, str | list[str]]:
        study, name = wildcards.study, wildcards.name
        layout, stage = self.layout, self.models[study][name]
        out: dict[str, str | list[str]] = {
            "predictions": layout.predictions(study, stage, name),
            "metrics": layout.metrics(study, stage, name),
            "splits": layout.splits(study),
            "manifest": layout.manifest(study),
            "cohort": layout.cohort_info(study),
            "problems": self._problem_files(study),
            **self._oracle(study),
        }
        if stage == "stage2":
            out["info"] = layout.head_file(study, name, "head.json")
            out["excluded"] = layout.head_file(study, name, "excluded.csv")
        else:
            folds = self.uses_folds(study)  # no single training history; fold 0's network draws the Grad-CAM
            out["history"] = [] if folds else layout.stage1_history(study, name)
            out["model"] = layout.stage1_model(study, name, fold=0 if folds else None)
            out["ingest"] = self._stage1_ingest(study, name)
        out["references"] = [layout.predictions(study, self.models[study][r], r) for r in self.references(wildcards)]
        return out

    def _oracle(self, study: str) -> dict[str, str]:
        """A demo cohort's oracle.json, which the reports show beside each AUROC."""
        return {"oracle": self.layout.oracle(study)} if self.studies[study]["cohort"]["source"] == "demo" else {}

    def model_modalities(self, wildcards: Wildcards) -> list[str]:
        """The modalities behind a model's predictions (its oracle's key)."""
        study = self.studies[wildcards.study]
        return sorted(model_modalities(study, self.heads[wildcards.study], wildcards.name))

    def study_modalities(self, wildcards: Wildcards) -> dict[str, list[str]]:
        study = self.studies[wildcards.study]
        return {name: sorted(model_modalities(study, self.heads[wildcards.study], name))
                for name in self.models[wildcards.study]}

    def study_report_inputs(self, wildcards: Wildcards) -> dict[str, str | list[str]]:
        study, models = wildcards.study, self.models[wildcards.study]
        layout = self.layout
        return {
            "metrics": [layout.metrics(study, stage, name) for name, stage in models.items()],
            "predictions": [layout.predictions(study, stage, name) for name, stage in models.items()],
            "splits": layout.splits(study),
            "manifest": layout.manifest(study),
            "cohort": layout.cohort_info(study),
            "problems": self._problem_files(study),
            **self._oracle(study),
            # the pages it links to, so that this one target brings a whole study up to date
            "pages": [layout.model_report(study, name) for name in models],
        }
