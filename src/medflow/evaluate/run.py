"""One model's metrics.json: the thresholds its head chose on validation (or, for a stage-1
network, Youden J on its validation predictions), then :func:`evaluate_predictions`; for PE
models with slice scores, the RSNA weighted log loss."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medflow.evaluate._frame import load_predictions
from medflow.evaluate.metrics import evaluate_predictions, write_metrics
from medflow.evaluate.pe import EXAM_WEIGHTS, rsna_pe_weighted_log_loss
from medflow.evaluate.threshold import validation_thresholds
from medflow.io.contracts import read_contract_csv

log = logging.getLogger(__name__)


def with_image_level(predictions: pd.DataFrame, slices_path: Path) -> pd.DataFrame:
    """Add a model's per-slice scores (slice_predictions.csv beside its predictions) as an
    image-level task, each slice keyed ``{study}#{slice}`` and clustered by its study's patient, so
    that the image-level AUC gets the same patient-bootstrap CI as the rest."""
    if not slices_path.is_file():
        return predictions
    slices = read_contract_csv(slices_path)
    studies = predictions.drop_duplicates("sample_id").set_index("sample_id")[["patient_id", "split", "center"]]
    slices = slices[slices["sample_id"].isin(studies.index)]
    rows = slices.join(studies, on="sample_id").assign(
        sample_id=lambda f: f["sample_id"] + "#" + f["slice"].astype(str))
    return pd.concat([predictions, rows[list(predictions.columns)]], ignore_index=True)


def rsna_loss(predictions: pd.DataFrame, slices_path: Path) -> dict[str, Any] | None:
    """The RSNA-STR PE loss per held-out split where every exam label and the slice scores exist."""
    if not slices_path.is_file() or not set(EXAM_WEIGHTS) <= set(predictions["task"]):
        return None
    slices = read_contract_csv(slices_path)
    out = {}
    for split in ("test", "external", "val"):
        exams = predictions[(predictions["split"] == split) & predictions["task"].isin(list(EXAM_WEIGHTS))]
        images = slices[slices["sample_id"].isin(set(exams["sample_id"]))]
        if exams.empty or exams["y_true"].isna().any() or images["y_true"].isna().any():
            continue
        out[split] = rsna_pe_weighted_log_loss(exams, images)
    return out or None


def evaluate_model(
    predictions: str | Path, out_path: str | Path, *, head_info: str | Path | None = None,
    slice_predictions: str | Path | None = None, n_boot: int = 1000, seed: int = 0,
) -> Path:
    """``slice_predictions``: per-slice scores that complete the RSNA loss of an exam-level PE
    model (by default the model's own slice_predictions.csv, where it has one)."""
    frame = load_predictions(predictions)
    info = json.loads(Path(head_info).read_text()) if head_info else {}
    if info.get("thresholds"):
        thresholds = {k: float(v) for k, v in info["thresholds"].items()}
        rule = info.get("threshold_rule", "chosen on the validation split")
    else:
        thresholds = validation_thresholds(frame)
        rule = "Youden J on the validation predictions (out-of-fold predictions with cross-validation)"
    frame = with_image_level(frame, Path(predictions).with_name("slice_predictions.csv"))
    missing = sorted(set(frame["task"]) - set(thresholds))
    if missing:
        thresholds.update(validation_thresholds(frame[frame["task"].isin(missing)]))
    metrics = evaluate_predictions(frame, thresholds, n_boot=n_boot, seed=seed)
    metrics["thresholds"] = thresholds
    metrics["threshold_rule"] = rule
    loss = rsna_loss(frame, Path(slice_predictions or Path(predictions).with_name("slice_predictions.csv")))
    if loss:
        metrics["rsna_weighted_log_loss"] = loss
    write_metrics(metrics, out_path)
    log.info("wrote %s (%d task(s); thresholds %s)", out_path, len(metrics["tasks"]),
             {k: round(v, 3) for k, v in thresholds.items() if np.isfinite(v)})
    return Path(out_path)
