"""Where every file of the workflow lives: each path template is written here once.

A method returns a concrete path when given names (``layout.splits("clnm")``) and a rule's template
when given wildcards (``layout.splits("{study}")``), so the rules' outputs and the input functions that
point at them cannot drift apart. The table "output / what it is" of the README lists these files.
"""

from __future__ import annotations

from dataclasses import dataclass

from medflow.config import ingest_suffix


@dataclass(frozen=True)
class Layout:
    """The output layout under the config's ``results`` and ``resources`` folders (and ``logs``)."""

    results: str = "results"
    resources: str = "resources"
    logs: str = "logs"

    # --- cohorts ---------------------------------------------------------------------------------

    def cohort_dir(self, study: str, origin: str = "checked") -> str:
        """Where a study's manifest.csv and cohort.json are: ``checked`` (validate_manifest's copy,
        which every later stage reads), or the cohort it was made from: ``demo`` or ``imported``."""
        if origin == "checked":
            return f"{self.results}/{study}"
        if origin not in ("demo", "imported"):
            raise ValueError(f"cohort origin {origin!r}: use checked, demo or imported")
        return f"{self.resources}/{origin}/{study}"

    def manifest(self, study: str, origin: str = "checked") -> str:
        return f"{self.cohort_dir(study, origin)}/manifest.csv"

    def cohort_info(self, study: str, origin: str = "checked") -> str:
        return f"{self.cohort_dir(study, origin)}/cohort.json"

    def oracle(self, study: str) -> str:
        """The best AUCs a demo cohort's planted signal allows."""
        return f"{self.cohort_dir(study, 'demo')}/oracle.json"

    # --- ingest and splits -----------------------------------------------------------------------

    def ingest(self, study: str, modality: str, kind: str) -> str:
        """A modality's ingested data: HDF5 for image kinds, parquet for table kinds."""
        return f"{self.results}/{study}/ingest/{modality}{ingest_suffix(kind)}"

    def problems(self, study: str, modality: str) -> str:
        return f"{self.results}/{study}/ingest/{modality}.problems.csv"

    def splits(self, study: str) -> str:
        return f"{self.results}/{study}/splits.csv"

    # --- models: stage-1 networks and stage-2 heads ----------------------------------------------

    def model_dir(self, study: str, stage: str, name: str, fold: int | str | None = None,
                  pretrain: bool = False) -> str:
        """A model's folder (``stage1`` or ``stage2``); a stage-1 network's fold k and contrastive
        pre-training have their own (``fold{k}/``, ``pretrain/``)."""
        out = f"{self.results}/{study}/{stage}/{name}"
        if fold is not None:
            out += f"/fold{fold}"
        return f"{out}/pretrain" if pretrain else out

    def stage1_model(self, study: str, model: str, fold: int | str | None = None, pretrain: bool = False) -> str:
        return f"{self.model_dir(study, 'stage1', model, fold, pretrain)}/model.pt"

    def stage1_history(self, study: str, model: str, fold: int | str | None = None, pretrain: bool = False) -> str:
        return f"{self.model_dir(study, 'stage1', model, fold, pretrain)}/history.csv"

    def predictions(self, study: str, stage: str, name: str, fold: int | str | None = None) -> str:
        return f"{self.model_dir(study, stage, name, fold)}/predictions.csv"

    def metrics(self, study: str, stage: str, name: str) -> str:
        return f"{self.model_dir(study, stage, name)}/metrics.json"

    def features(self, study: str, name: str) -> str:
        """Feature vectors of a stage-1 network or of an encoder (their names never clash: config check)."""
        return f"{self.results}/{study}/features/{name}.h5"

    def features_csv(self, study: str, name: str) -> str:
        """The feature vectors of a stage-1 network as CSV, built only when asked for by this path."""
        return f"{self.results}/{study}/features/{name}.csv"

    def head_file(self, study: str, head: str, file: str) -> str:
        """A file a stage-2 head writes beside its predictions: ``head.json``, ``excluded.csv``,
        ``embeddings.h5`` (a unimodal EHR head's encoder output: the frozen input of early fusion) or
        ``slice_predictions.csv`` (an image head's per-slice scores)."""
        return f"{self.model_dir(study, 'stage2', head)}/{file}"

    # --- reports and logs ------------------------------------------------------------------------

    def model_report(self, study: str, name: str) -> str:
        return f"{self.results}/{study}/{name}_report.html"

    def study_report(self, study: str) -> str:
        return f"{self.results}/{study}/report.html"

    def log(self, study: str, job: str) -> str:
        return f"{self.logs}/{study}/{job}.log"
