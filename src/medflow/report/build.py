"""From a model's files to its report: read predictions, metrics, training history, cohort files
and the reference models' predictions, compute the paired comparisons, render."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medflow.evaluate.compare import compare_heads
from medflow.io.contracts import read_contract_csv
from medflow.report.context import cohort_flow, provenance
from medflow.report.oracle import load_oracle, oracle_auc
from medflow.report.render import (
    overview_cell,
    overview_columns,
    page_link,
    render_head_report,
    render_study_report,
)

log = logging.getLogger(__name__)

COMPARED_SPLITS = ("test", "external")


def read_predictions(path: str | Path) -> pd.DataFrame:
    return read_contract_csv(path)


def _maybe_json(path: str | Path | None) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def comparisons(
    predictions: pd.DataFrame, references: Mapping[str, str | Path], *, n_boot: int, seed: int,
) -> list[dict[str, Any]]:
    """Paired DeLong and patient-bootstrap ΔAUC of this model against each reference, per shared
    task and held-out split, on the samples both scored (joined on sample_id)."""
    rows = []
    for other, path in references.items():
        reference = read_predictions(path)
        for task in sorted(set(predictions["task"]) & set(reference["task"])):
            for split in COMPARED_SPLITS:
                a = predictions[(predictions["task"] == task) & (predictions["split"] == split)]
                b = reference[(reference["task"] == task) & (reference["split"] == split)]
                if a.empty or b.empty:
                    continue
                result = compare_heads(a, b, task=task, split=split, n_boot=n_boot, seed=seed)
                delong, boot = result.get("delong"), result.get("bootstrap")
                if not delong or not boot:
                    continue
                rows.append({"other": other, "task": task, "split": split, "n": result["n"],
                             "auc_a": delong["auc_a"], "auc_b": delong["auc_b"], "diff": delong["diff"],
                             "ci": boot["ci"], "p_delong": delong["p_value"], "p_boot": boot.get("p_value"),
                             "only_here": result.get("n_only_in_a"), "only_there": result.get("n_only_in_b")})
    return rows


def build_head_report(
    out_path: str | Path,
    *,
    study_name: str,
    study: Mapping[str, Any],
    config: Mapping[str, Any],
    name: str,
    kind: str,
    spec: Mapping[str, Any],
    predictions: str | Path,
    metrics: str | Path,
    splits: str | Path,
    manifest: str | Path,
    label: str,
    cohort_info: str | Path | None = None,
    problems: Sequence[str | Path] = (),
    head_info: str | Path | None = None,
    history: str | Path | None = None,
    excluded: str | Path | None = None,
    references: Mapping[str, str | Path] | None = None,
    image_model: tuple[str | Path, str | Path] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    oracle: str | Path | None = None,
    modalities: Sequence[str] = (),
) -> Path:
    """``image_model``: (ingest file, model.pt) of an image network, for Grad-CAM overlays;
    ``oracle``: a demo cohort's oracle.json, whose AUROC for the model's ``modalities`` the page
    shows beside the model's."""
    frame = read_predictions(predictions)
    cam = None
    if image_model is not None:
        from medflow.report.gradcam import gradcam_figure

        try:
            cam = gradcam_figure(spec, ingest=image_model[0], splits=splits, manifest=manifest,
                                 model_path=image_model[1], label=label, predictions=frame)
        except Exception as exc:  # the report must not fail over an illustration; say why it is missing
            log.warning("no Grad-CAM overlays: %s", exc)
    info = _maybe_json(head_info)
    history_frame = pd.read_csv(history) if history and Path(history).is_file() else None
    run_seconds = (info or {}).get("seconds")
    if run_seconds is None and history_frame is not None and "seconds" in history_frame:
        run_seconds = float(history_frame["seconds"].sum())
    flow = cohort_flow(manifest, splits, label, problems=problems, excluded=excluded, cohort_info=cohort_info)
    return render_head_report(
        out_path, study_name=study_name, study=study, head=name, kind=kind, spec=spec, predictions=frame,
        metrics=json.loads(Path(metrics).read_text()), flow=flow,
        provenance=provenance(config=config, manifest=manifest, predictions=predictions, run_seconds=run_seconds),
        head_info=info, history=history_frame,
        comparisons=comparisons(frame, references or {}, n_boot=n_boot, seed=seed), n_boot=n_boot,
        gradcam=cam, oracles=_oracles(modalities, json.loads(Path(metrics).read_text()), load_oracle(oracle)),
    )


def _oracles(modalities: Sequence[str], metrics: Mapping[str, Any],
             oracle: Mapping[str, Any] | None) -> dict[str, float | None]:
    """task → the oracle AUROC of a model reading ``modalities`` (None without an oracle.json)."""
    return {task: oracle_auc(oracle, task, set(modalities)) for task in metrics.get("tasks", {})}


def summary_rows(name: str, kind: str, metrics: Mapping[str, Any], link: str,
                 oracles: Mapping[str, float | None] | None = None) -> list[dict[str, Any]]:
    """One study-page row per task of a model: the cells of :func:`overview_columns` (and its oracle)."""
    rows = []
    for task, task_metrics in metrics.get("tasks", {}).items():
        splits = task_metrics.get("splits", {})
        rows.append({"name": name, "kind": kind, "task": task, "link": link, "oracle": (oracles or {}).get(task),
                     "cells": [overview_cell(column, splits.get(split) or {}) for split, column in overview_columns()]})
    return rows


def build_study_report(
    out_path: str | Path,
    *,
    study_name: str,
    study: Mapping[str, Any],
    config: Mapping[str, Any],
    models: Mapping[str, tuple[str, str | Path, str | Path]],
    splits: str | Path,
    manifest: str | Path,
    label: str,
    cohort_info: str | Path | None = None,
    problems: Sequence[str | Path] = (),
    oracle: str | Path | None = None,
    modalities: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """``models``: name → (kind, metrics.json, predictions.csv); ``oracle``: a demo cohort's
    oracle.json and ``modalities`` (model → the modalities it reads) its AUROC per model."""
    summaries = []
    known = load_oracle(oracle)
    for name, (kind, metrics_path, _predictions) in models.items():
        metrics = json.loads(Path(metrics_path).read_text())
        summaries += summary_rows(name, kind, metrics, page_link(f"{name}_report.html"),
                                  _oracles((modalities or {}).get(name, ()), metrics, known))
    flow = cohort_flow(manifest, splits, label, problems=problems, cohort_info=cohort_info)
    first = next(iter(models.values()))[2] if models else manifest
    return render_study_report(
        out_path, study_name=study_name, study=study, summaries=summaries, flow=flow,
        provenance=provenance(config=config, manifest=manifest, predictions=first, run_seconds=None),
    )
