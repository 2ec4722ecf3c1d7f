"""One row per model and task of finished studies: test AUROC with its interval, the oracle beside
it, the training AUROC, and for a head the best single input it fuses with the paired DeLong test.

This is the demo table of the closing notes and the per-seed rows of ``bench/science.py``: it reads
what the workflow wrote (metrics.json, predictions.csv, the demo cohort's oracle.json) and computes
nothing a report does not already state, except the head-vs-best-input comparison.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medflow.evaluate._frame import load_predictions
from medflow.evaluate.compare import compare_heads
from medflow.report.oracle import load_oracle, model_modalities, oracle_auc
from medflow.workflow.plan import Plan

COLUMNS = ["study", "model", "task", "n_test", "auroc", "ci_low", "ci_high", "oracle", "gap", "train_auroc",
           "best_input", "best_input_auroc", "p_vs_best_input"]


def _split_auroc(metrics: Mapping[str, Any], task: str, split: str) -> dict[str, Any]:
    entry = metrics["tasks"][task]["splits"].get(split) or {}
    auroc = entry.get("auroc") or {}
    return {"n": entry.get("n"), "value": auroc.get("value"), "ci": auroc.get("delong_ci") or [None, None]}


def _best_input(plan: Plan, study: str, head: str, task: str,
                scores: Mapping[tuple[str, str], float | None]) -> str | None:
    """The single input ``head`` must beat on ``task``: for a fusion head (several modalities) the best
    model of one of its modalities alone; otherwise the best of its direct inputs."""
    spec, heads = plan.studies[study], plan.heads[study]
    modalities = model_modalities(spec, heads, head)
    if len(modalities) > 1:
        candidates = [name for name in plan.models[study]
                      if len(single := model_modalities(spec, heads, name)) == 1 and single <= modalities]
    else:
        candidates = list(heads.get(head, {}).get("inputs", []))
    scored = [(scores[(name, task)], name) for name in candidates
              if name != head and scores.get((name, task)) is not None]
    return max(scored)[1] if scored else None


def study_rows(plan: Plan, study: str) -> list[dict[str, Any]]:
    """The rows of one study whose models have metrics (models not yet evaluated are skipped)."""
    layout, spec = plan.layout, plan.studies[study]
    oracle = load_oracle(layout.oracle(study)) if spec["cohort"]["source"] == "demo" else None
    metrics: dict[str, dict[str, Any]] = {}
    for name, stage in plan.models[study].items():
        path = Path(layout.metrics(study, stage, name))
        if path.is_file():
            metrics[name] = json.loads(path.read_text(encoding="utf-8"))
    scores = {(name, task): _split_auroc(m, task, "test")["value"]
              for name, m in metrics.items() for task in m["tasks"]}
    predictions: dict[str, pd.DataFrame] = {}  # each file read once, however many tasks pair it
    rows = []
    for name, m in metrics.items():
        modalities = model_modalities(spec, plan.heads[study], name)
        for task in m["tasks"]:
            test, train = _split_auroc(m, task, "test"), _split_auroc(m, task, "train")
            best = oracle_auc(oracle, task, modalities)
            row = {"study": study, "model": name, "task": task, "n_test": test["n"], "auroc": test["value"],
                   "ci_low": test["ci"][0], "ci_high": test["ci"][1], "oracle": best,
                   "gap": None if best is None or test["value"] is None else best - test["value"],
                   "train_auroc": train["value"], "best_input": None, "best_input_auroc": None,
                   "p_vs_best_input": None}
            if plan.models[study][name] == "stage2" and (other := _best_input(plan, study, name, task, scores)):
                row["best_input"], row["best_input_auroc"] = other, scores[(other, task)]
                row["p_vs_best_input"] = _paired_p(plan, study, name, other, task, predictions)
            rows.append(row)
    return rows


def _paired_p(plan: Plan, study: str, head: str, other: str, task: str,
              predictions: dict[str, pd.DataFrame]) -> float | None:
    layout, models = plan.layout, plan.models[study]
    for name in (head, other):
        if name not in predictions:
            predictions[name] = load_predictions(layout.predictions(study, models[name], name))
    try:
        result = compare_heads(predictions[head], predictions[other], task=task, n_boot=200)
    except ValueError:  # the two score different units (slices vs studies): no pairing
        return None
    return (result.get("delong") or {}).get("p_value")


def scoreboard(checked: Mapping[str, Any], studies: Iterable[str] | None = None) -> pd.DataFrame:
    """The table of every evaluated model of ``studies`` (default: all) of a checked config."""
    plan = Plan(checked, request_gpus=False)
    rows = [row for study in (studies or plan.studies) for row in study_rows(plan, study)]
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(table: pd.DataFrame) -> str:
    """A plain Markdown table (no extra dependency), numbers to 3 decimals."""
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "–"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
