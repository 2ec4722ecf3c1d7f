"""The report's figures: matplotlib (Agg) rendered to PNG data URIs, so the page embeds them and
needs nothing else to display offline or print."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

SPLIT_COLOURS = {"test": "#1f77b4", "external": "#d62728", "val": "#2ca02c", "train": "#7f7f7f"}
FPR_GRID = np.linspace(0.0, 1.0, 101)


def to_data_uri(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _known(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows[rows["y_true"].notna() & rows["y_prob"].notna()]
    return rows if rows["y_true"].nunique() == 2 else rows.iloc[0:0]


def roc_band(rows: pd.DataFrame, *, n_boot: int = 200, level: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the ROC curve (TPR at fixed FPRs) over patient-level bootstrap
    resamples: a patient's samples are drawn together."""
    rng = np.random.default_rng(seed)
    patients = rows["patient_id"].astype(str).to_numpy()
    groups, codes = np.unique(patients, return_inverse=True)
    y, p = rows["y_true"].to_numpy(float), rows["y_prob"].to_numpy(float)
    curves = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(groups), len(groups)), minlength=len(groups))
        weights = counts[codes]
        if weights[y == 1].sum() == 0 or weights[y == 0].sum() == 0:
            continue
        fpr, tpr, _ = roc_curve(y, p, sample_weight=weights)
        curves.append(np.interp(FPR_GRID, fpr, tpr))
    if not curves:
        return np.full_like(FPR_GRID, np.nan), np.full_like(FPR_GRID, np.nan)
    alpha = (1 - level) / 2
    stacked = np.vstack(curves)
    return np.quantile(stacked, alpha, axis=0), np.quantile(stacked, 1 - alpha, axis=0)


def roc_figure(predictions: pd.DataFrame, aucs: Mapping[str, Any], splits: Sequence[str]) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for split in splits:
        rows = _known(predictions[predictions["split"] == split])
        if rows.empty:
            continue
        fpr, tpr, _ = roc_curve(rows["y_true"], rows["y_prob"])
        low, high = roc_band(rows)
        colour = SPLIT_COLOURS.get(split, "black")
        label = f"{split} (AUC {aucs.get(split, float('nan')):.3f}, n={len(rows)})"
        ax.plot(fpr, tpr, color=colour, lw=1.8, label=label)
        ax.fill_between(FPR_GRID, low, high, color=colour, alpha=0.15, lw=0)
    ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1)
    ax.set(xlabel="1 − specificity (FPR)", ylabel="sensitivity (TPR)", xlim=(0, 1), ylim=(0, 1.01),
           title="ROC with 95% patient-bootstrap band")
    ax.legend(loc="lower right", fontsize=8)
    return to_data_uri(fig)


def pr_figure(predictions: pd.DataFrame, splits: Sequence[str]) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for split in splits:
        rows = _known(predictions[predictions["split"] == split])
        if rows.empty:
            continue
        precision, recall, _ = precision_recall_curve(rows["y_true"], rows["y_prob"])
        colour = SPLIT_COLOURS.get(split, "black")
        ax.step(recall, precision, where="post", color=colour, lw=1.6, label=split)
        ax.axhline(rows["y_true"].mean(), color=colour, ls=":", lw=1)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision–recall (dotted: prevalence)")
    ax.legend(loc="upper right", fontsize=8)
    return to_data_uri(fig)


def calibration_figure(curves: Mapping[str, Mapping[str, Sequence[float]]]) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="#999999", lw=1, label="perfect")
    for split, curve in curves.items():
        x, y = curve.get("mean_predicted") or [], curve.get("fraction_positive") or []
        if len(x):
            ax.plot(x, y, marker="o", ms=4, color=SPLIT_COLOURS.get(split, "black"), label=split)
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction positive", xlim=(0, 1), ylim=(0, 1),
           title="Calibration (reliability)")
    ax.legend(loc="upper left", fontsize=8)
    return to_data_uri(fig)


def decision_curve_figure(curve: Mapping[str, Sequence[float]], split: str) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    t = np.asarray(curve.get("thresholds") or [], dtype=float)
    model = np.asarray(curve.get("model") or [], dtype=float)
    treat_all = np.asarray(curve.get("treat_all") or [], dtype=float)
    if len(t):
        ax.plot(t, model, color=SPLIT_COLOURS.get(split, "black"), lw=1.8, label="model")
        ax.plot(t, treat_all, color="#ff7f0e", lw=1.2, label="treat all")
        ax.axhline(0.0, color="#555555", lw=1, label="treat none")
        finite = np.concatenate([model[np.isfinite(model)], [0.0]])
        ax.set_ylim(min(-0.05, float(finite.min()) - 0.02), max(0.05, float(finite.max()) + 0.05))
    ax.set(xlabel="threshold probability", ylabel="net benefit", title=f"Decision curve ({split})")
    ax.legend(loc="upper right", fontsize=8)
    return to_data_uri(fig)


def confusion_figure(confusion: Mapping[str, int], split: str) -> str:
    matrix = np.array([[confusion.get("tn", 0), confusion.get("fp", 0)], [confusion.get("fn", 0), confusion.get("tp", 0)]])
    fig, ax = plt.subplots(figsize=(3.2, 3.0))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=12,
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], ["predicted 0", "predicted 1"])
    ax.set_yticks([0, 1], ["actual 0", "actual 1"])
    ax.set_title(f"Confusion matrix ({split})")
    return to_data_uri(fig)


def history_figure(history: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.plot(history["epoch"], history["train_loss"], label="train loss", color="#1f77b4")
    if history["val_loss"].notna().any():
        ax.plot(history["epoch"], history["val_loss"], label="validation loss", color="#2ca02c")
    ax.set(xlabel="epoch", ylabel="loss", title="Training curves")
    if "val_auc" in history and history["val_auc"].notna().any():
        twin = ax.twinx()
        twin.plot(history["epoch"], history["val_auc"], color="#d62728", ls="--", label="validation AUC")
        twin.set_ylabel("validation AUC")
        twin.set_ylim(0, 1)
        twin.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    return to_data_uri(fig)


def comparison_figure(rows: Sequence[Mapping[str, Any]]) -> str:
    """Forest plot of AUCs with CIs (one line per head)."""
    fig, ax = plt.subplots(figsize=(5.6, 0.45 * max(len(rows), 2) + 1.0))
    for i, row in enumerate(rows):
        low, high = row.get("ci") or (np.nan, np.nan)
        ax.errorbar(row["auc"], i, xerr=[[row["auc"] - low], [high - row["auc"]]] if np.isfinite(low) else None,
                    fmt="o", color="#1f77b4" if not row.get("this") else "#d62728", capsize=3)
    ax.set_yticks(range(len(rows)), [str(r["name"]) for r in rows])
    ax.axvline(0.5, color="#999999", ls="--", lw=1)
    ax.set(xlabel="AUROC (95% CI)", xlim=(0, 1), title="Heads compared")
    ax.invert_yaxis()
    return to_data_uri(fig)
