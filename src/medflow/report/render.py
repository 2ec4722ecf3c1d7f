"""The self-contained HTML report of one model (stage-1 network or stage-2 head) and the study
overview. Jinja2 with autoescaping: every text that comes from data (centre names, ids, column
names, reasons) is escaped, so a centre called ``<script>…`` shows as text."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import pandas as pd
from markupsafe import Markup

from medflow.evaluate.registry import Column, list_metrics
from medflow.heads.registry import get_head_type
from medflow.io.atomic import atomic_path
from medflow.io.contracts import SPLIT_ORDER, ordered_splits
from medflow.report import figures


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(value: Any) -> str:
    if isinstance(value, str):  # a reason in place of an interval
        return value
    if not value or any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in value):
        return ""
    return f"({value[0]:.3f}–{value[1]:.3f})"


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _pval(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{value:.0f} s"


FORMATS = {"num": _num, "pct": _pct}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("medflow.report").joinpath("templates"))),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(num=_num, ci=_ci, pct=_pct, pval=_pval, seconds=_seconds)
    return env


def css() -> Markup:
    """The report style sheet, marked safe: HTML-escaping it (quotes in font names) breaks the CSS.
    It is medflow's own file; one that could close the style element is refused."""
    text = resources.files("medflow.report").joinpath("templates/base.css").read_text(encoding="utf-8")
    if "</" in text:
        raise ValueError("base.css must not contain '</' (it would end the <style> element)")
    return Markup(text)


def page_link(file_name: str) -> str:
    """A link to a sibling report page: always relative (``./``, percent-encoded), so no model name
    (``javascript:…``, ``//host/…``) can turn it into another scheme or host."""
    return "./" + quote(file_name, safe="")


def table_columns() -> list[Column]:
    """The columns of a model page's performance table: every report metric's, in registry order."""
    return [column for metric in list_metrics() for column in metric.columns]


def overview_columns() -> list[tuple[str, Column]]:
    """The study page's (split, column) pairs: metric by metric, split by split (test AUROC and its
    interval, external AUROC and its interval, ...)."""
    return [(split, column) for metric in list_metrics() for split in SPLIT_ORDER for column in metric.columns
            if split in column.overview]


#: Fewer positives or negatives than this in a split and its intervals are not shown: a bootstrap or
#: DeLong interval from three studies has zero width and says nothing.
MIN_PER_CLASS = 10


def class_counts(split_metrics: Mapping[str, Any]) -> tuple[int, int] | None:
    n, prevalence = split_metrics.get("n"), split_metrics.get("prevalence")
    if not n or prevalence is None:
        return None
    positives = round(n * prevalence)
    return positives, n - positives


def too_few(split_metrics: Mapping[str, Any]) -> str | None:
    """Why a split's intervals are not estimable, in words; None when they are."""
    counts = class_counts(split_metrics)
    if counts is None or min(counts) >= MIN_PER_CLASS:
        return None
    return (f"{counts[0]} positive and {counts[1]} negative sample(s): too few (under {MIN_PER_CLASS} of a class) "
            f"to estimate an interval")


def cell(column: Column, split_metrics: Mapping[str, Any]) -> str:
    """The text of ``column`` for one split: its number, then its interval (or why there is none)."""
    value, ci = column.read(split_metrics)
    parts = [FORMATS[column.fmt](value)] if column.value else []
    if column.ci:
        parts.append("(not estimable)" if too_few(split_metrics) else _ci(ci))
    return " ".join(parts)


def overview_cell(column: Column, split_metrics: Mapping[str, Any]) -> str:
    """The study page is terse: a column's number, or its interval when it has no number."""
    value, ci = column.read(split_metrics)
    if column.value:
        return FORMATS[column.fmt](value)
    return "not estimable" if too_few(split_metrics) else _ci(ci)


def metric_rows(task_metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One table row per split from a task's metrics (see :mod:`medflow.evaluate.metrics`)."""
    rows = []
    splits = task_metrics.get("splits", {})
    columns = table_columns()
    for split in ordered_splits(list(splits)):
        m = splits[split]
        rows.append({"split": split, "n": m.get("n"), "n_patients": m.get("n_patients"),
                     "prevalence": m.get("prevalence"), "cells": [cell(c, m) for c in columns],
                     "note": (m.get("auroc") or {}).get("reason") or m.get("reason") or too_few(m)})
    return rows


def task_figures(task: str, task_metrics: Mapping[str, Any], predictions: pd.DataFrame) -> list[dict[str, str]]:
    rows = predictions[predictions["task"] == task]
    splits = task_metrics.get("splits", {})
    present = ordered_splits([s for s in splits if s != "train"])
    aucs = {s: (splits[s].get("auroc") or {}).get("value") or float("nan") for s in present}
    out = [{"src": figures.roc_figure(rows, aucs, present), "alt": f"ROC curves for {task}"},
           {"src": figures.pr_figure(rows, present), "alt": f"precision-recall curves for {task}"}]
    curves = {s: (splits[s].get("calibration") or {}).get("curve") or {} for s in present}
    out.append({"src": figures.calibration_figure(curves), "alt": f"calibration of {task}"})
    main = present[0] if present else None
    if main:
        dca = splits[main].get("decision_curve") or {}
        out.append({"src": figures.decision_curve_figure(dca, main), "alt": f"decision curve for {task}"})
        confusion = splits[main].get("confusion")
        if confusion:
            out.append({"src": figures.confusion_figure(confusion, main), "alt": f"confusion matrix for {task}"})
    return out


def headline(task: str, task_metrics: Mapping[str, Any], oracle: float | None = None) -> str | None:
    parts = []
    for split in ("test", "external"):
        m = task_metrics.get("splits", {}).get(split)
        if not m:
            continue
        auroc = m.get("auroc") or {}
        if auroc.get("value") is None:
            continue
        counts = class_counts(m)
        if too_few(m) and counts:
            parts.append(f"{split} AUROC {_num(auroc['value'])} (n = {m.get('n')}, {counts[0]} positive and "
                         f"{counts[1]} negative: too few for an interval)")
        else:
            parts.append(f"{split} AUROC {_num(auroc['value'])} {_ci(auroc.get('delong_ci'))} (n = {m.get('n')})")
    if parts and oracle is not None:  # a demo cohort: the best its planted signal allows
        parts.append(f"oracle {_num(oracle)}")
    return f"{task}: " + "; ".join(parts) if parts else None


def split_text(study: Mapping[str, Any], flow: Mapping[str, Any]) -> str:
    """How the splits were made: generated (fractions, seed, held-out centres), fixed by the cohort
    (every sample's split came in the manifest, as from a seed's split folders), or both."""
    split = study["split"]
    n_fixed, n_all = int(flow.get("n_fixed_split") or 0), int(flow.get("n_manifest") or 0)
    if n_fixed and n_fixed >= n_all:
        text = (f"Fixed by the cohort ({flow.get('source', 'manifest')}): every sample's split came with it, so the "
                "configured fractions and seed were not used.")
    else:
        fractions = ", ".join(f"{k} {v:g}" for k, v in split["fractions"].items())
        text = (f"{n_fixed} of {n_all} samples came with a fixed split (the manifest's split column); the others: "
                if n_fixed else "")
        text += (f"{'p' if n_fixed else 'P'}atient-grouped, stratified on {split.get('stratify') or study['labels'][0]} "
                 f"(seed {split['seed']}): {fractions}.")
        if split.get("external_centers"):
            text += f" Centre(s) {', '.join(map(str, split['external_centers']))} held out entirely as the external split."
    if split.get("folds"):
        text += (f" {split['folds']} grouped folds over the training part; each training sample is scored by the "
                 "model that did not see it, test samples by the mean of the fold models.")
    if flow.get("grouping", "patient") == "none":
        text += " Patient ids are unknown for this cohort, so each sample was its own group."
    return text


def render_head_report(
    out_path: str | Path,
    *,
    study_name: str,
    study: Mapping[str, Any],
    head: str,
    kind: str,
    spec: Mapping[str, Any],
    predictions: pd.DataFrame,
    metrics: Mapping[str, Any],
    flow: Mapping[str, Any],
    provenance: Mapping[str, Any],
    head_info: Mapping[str, Any] | None = None,
    history: pd.DataFrame | None = None,
    comparisons: Sequence[Mapping[str, Any]] = (),
    n_boot: int = 1000,
    gradcam: str | None = None,
    oracles: Mapping[str, float | None] | None = None,
) -> Path:
    tasks = []
    centres = []
    thresholds = (head_info or {}).get("thresholds") or metrics.get("thresholds") or {}
    for task, task_metrics in metrics.get("tasks", {}).items():
        tasks.append({"name": task, "threshold": thresholds.get(task), "rows": metric_rows(task_metrics),
                      "figures": task_figures(task, task_metrics, predictions), "extra": task_metrics.get("note")})
        for row in task_metrics.get("centers", []):
            auroc = row.get("auroc") or {}
            centres.append({"task": task, "split": row.get("split"), "center": row.get("center"), "n": row.get("n"),
                            "prevalence": row.get("prevalence"), "auroc": auroc.get("value"),
                            "ci": "not estimable" if too_few(row) else auroc.get("delong_ci")})
    warnings = list(flow.get("warnings", []))
    training = {}
    if head_info:
        for key in ("best_epoch", "epochs_run", "monitor", "best_metric", "n_excluded", "seconds"):
            if head_info.get(key) is not None:
                training[key.replace("_", " ")] = head_info[key]
        for task, search in (head_info.get("search") or {}).items():
            training[f"grid search ({task})"] = f"best {search.get('best_params')}, grouped-CV AUC {_num(search.get('cv_auc'))}"
    if history is not None and len(history):
        best = history.loc[history["val_auc"].idxmax()] if history["val_auc"].notna().any() else history.iloc[-1]
        training.setdefault("epochs run", len(history))
        training.setdefault("best epoch (validation)", int(best["epoch"]))
    figs = {"history": figures.history_figure(history) if history is not None and len(history) else None,
            "comparison": None, "gradcam": gradcam}
    if comparisons:
        forest = {}
        for row in comparisons:
            if row["split"] in ("test", "external") and row.get("task") == comparisons[0].get("task"):
                forest.setdefault(f"{head} ({row['split']})", {"name": f"{head} ({row['split']})", "auc": row["auc_a"],
                                                               "ci": None, "this": True})
                forest[f"{row['other']} ({row['split']})"] = {"name": f"{row['other']} ({row['split']})",
                                                              "auc": row["auc_b"], "ci": None}
        rows = [r for r in forest.values() if r["auc"] is not None]
        figs["comparison"] = figures.comparison_figure(rows) if rows else None
    oracles = oracles or {}
    headlines = [h for h in (headline(t, m, oracles.get(t)) for t, m in metrics.get("tasks", {}).items()) if h]
    for split, loss in (metrics.get("rsna_weighted_log_loss") or {}).items():
        headlines.append(f"RSNA-STR PE weighted log loss ({split}, {loss.get('n_studies')} studies): "
                         f"{_num(loss.get('loss'), 4)} (exam part {_num(loss.get('exam_loss'), 4)}, "
                         f"image part {_num(loss.get('image_loss'), 4)})")
    page = environment().get_template("head.html.j2").render(
        css=css(), study=study_name, head=head, description=study.get("description", ""), kind=kind,
        headlines=headlines,
        warnings=warnings, flow=flow, n_scored=int(predictions["sample_id"].nunique()),
        modalities=study["modalities"], inputs=list(spec.get("inputs") or [spec.get("modality", "")]),
        split_text=split_text(study, flow), model_text=_model_text(kind, spec),
        training=training, figures=figs, spec_json=json.dumps(dict(spec), indent=2, default=str),
        tasks=tasks, columns=table_columns(), centres=centres, comparisons=list(comparisons),
        provenance=provenance, n_boot=n_boot,
        threshold_rule=(head_info or {}).get("threshold_rule") or metrics.get("threshold_rule", "Youden J"),
    )
    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return Path(out_path)


def _model_text(kind: str, spec: Mapping[str, Any]) -> str:
    if kind == "stage1":
        text = f"Stage-1 network {spec.get('model')} on {spec.get('modality')}"
        if spec.get("pretrain", "none") != "none":
            text += (f", encoder pre-trained with {spec['pretrain']} (contrastive) and frozen (BatchNorm included) "
                     "under a linear classifier")
        return text + "."
    head_type = get_head_type(spec["type"])
    text = head_type.description
    for setting, sentences in head_type.report_notes.items():
        sentence = sentences.get(str(spec.get(setting, next(iter(sentences)))))
        if sentence:
            text += " " + sentence
    return text


def render_study_report(
    out_path: str | Path, *, study_name: str, study: Mapping[str, Any], summaries: Sequence[Mapping[str, Any]],
    flow: Mapping[str, Any], provenance: Mapping[str, Any],
) -> Path:
    """All models of a study side by side: AUROC with CIs per task and split, with links to each report
    (and, for a demo cohort, the oracle AUROC of each model's modalities)."""
    page = environment().get_template("study.html.j2").render(
        css=css(), study=study_name, description=study.get("description", ""), summaries=list(summaries),
        columns=overview_columns(), with_oracle=any(row.get("oracle") is not None for row in summaries),
        flow=flow, provenance=provenance, split_text=split_text(study, flow),
    )
    with atomic_path(out_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return Path(out_path)
