"""Fitting one stage-2 head end to end: inputs joined by id → fit on train (selection on val) →
probabilities for every split → the decision threshold chosen on validation (Youden J) →
``predictions.csv``, ``excluded.csv`` and ``head.json`` (type, tasks, thresholds, model file)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medflow.evaluate.threshold import validation_thresholds
from medflow.heads.inputs import HeadData, load_head_data
from medflow.heads.registry import build_head
from medflow.io.atomic import atomic_path
from medflow.io.contracts import PREDICTION_COLUMNS, write_contract_csv, write_predictions

log = logging.getLogger(__name__)


def long_predictions(data: HeadData, probs: np.ndarray, tasks: list[str]) -> pd.DataFrame:
    frames = []
    labels = data.labels()
    for t, task in enumerate(tasks):
        frames.append(data.table[["sample_id", "patient_id", "split", "center"]].assign(
            task=task, y_true=labels[:, t], y_prob=probs[:, t]))
    return pd.concat(frames, ignore_index=True)[list(PREDICTION_COLUMNS)]


def derived_pe(frame: pd.DataFrame) -> pd.DataFrame:
    """RSNA exams: P(PE) = 1 − P(negative_exam_for_pe), added as task ``pe`` when it is absent."""
    if "negative_exam_for_pe" not in set(frame["task"]) or "pe" in set(frame["task"]):
        return frame
    negative = frame[frame["task"] == "negative_exam_for_pe"]
    pe = negative.assign(task="pe", y_true=1.0 - negative["y_true"], y_prob=1.0 - negative["y_prob"])
    return pd.concat([frame, pe], ignore_index=True)


def run_head(
    name: str,
    spec: Mapping[str, Any],
    *,
    splits: str | Path,
    manifest: str | Path,
    files: Mapping[str, Mapping[str, str]],
    out_dir: str | Path,
    device: Any = None,
) -> Path:
    """Fit head ``name`` and write its outputs into ``out_dir``; returns the predictions path.
    ``device``: the torch device of neural heads (None: the CPU)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = list(spec["tasks"])
    variables = spec.get("variables") or {}
    data = load_head_data(
        splits=splits, manifest=manifest, tasks=tasks, features=files.get("features"),
        tables={n: (p, variables.get(n)) for n, p in (files.get("tables") or {}).items()},
        predictions=files.get("predictions"),
        slice_labels=next(iter((files.get("slices") or {}).values()), None),
    )
    train, val = data.split("train"), data.split("val")
    if not len(train):
        raise ValueError(f"head {name}: no training samples have all of its inputs")
    log.info("head %s (%s): %d samples (%d train, %d val), %d excluded", name, spec["type"], len(data),
             len(train), len(val), len(data.excluded))
    head = build_head(spec, tasks).fit(train, val, out_dir, device)
    frame = derived_pe(long_predictions(data, head.predict_proba(data), tasks))
    thresholds = validation_thresholds(frame)  # the val rows of every task, the derived ones included
    if hasattr(head, "write_extras"):
        head.write_extras(data, out_dir)
    write_contract_csv(data.excluded, out_dir / "excluded.csv")
    write_predictions(frame, out_dir / "predictions.csv")
    info = {
        "head": name, "type": spec["type"], "inputs": list(spec["inputs"]), "tasks": sorted(set(frame["task"])),
        "thresholds": thresholds, "threshold_rule": "Youden J on the validation split",
        "n_samples": len(data), "n_excluded": len(data.excluded),
        "n_by_split": {k: int(v) for k, v in data.table["split"].value_counts().items()},
        "seconds": round(time.perf_counter() - started, 2), "spec": dict(spec), **head.save(out_dir),
    }
    with atomic_path(out_dir / "head.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=str))
    log.info("head %s done in %.1f s; thresholds %s", name, info["seconds"], thresholds)
    return out_dir / "predictions.csv"
