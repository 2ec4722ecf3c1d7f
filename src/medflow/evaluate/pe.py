"""The RSNA-STR Pulmonary Embolism Detection (Kaggle 2020) weighted log loss.

Reported next to AUROC for the PE study so results can be compared with the competition. The
metric is one weighted binary cross-entropy over every label of every study:

    L = Σ_s [ Σ_j w_j · BCE(y_sj, p_sj) + Σ_i w_img · q_s · BCE(y_si, p_si) ]
        ─────────────────────────────────────────────────────────────────────
        Σ_s [ Σ_j w_j + Σ_i w_img · q_s ]

where j runs over the nine exam labels of study s, i over its images (``pe_present_on_image``),
q_s = (positive images of s) / (images of s), BCE(y, p) = −[y·log p + (1 − y)·log(1 − p)], and the
published weights are those below. A study without positive images (q_s = 0) therefore adds
nothing to the image part, and Σ_i w_img · q_s = w_img · (positive images of s).
The competition also required exam labels to be mutually consistent; that is a submission rule,
not part of the loss, and is not checked here. Probabilities are clipped to [eps, 1 − eps].

Inputs follow medflow's prediction contracts (long format, joined on ids, never on row order):
``exams`` has ``sample_id, task, y_true, y_prob`` with one row per study per exam label (stage 2
``predictions.csv``; other tasks are ignored), ``images`` has ``sample_id, y_true, y_prob`` with
one row per slice (``slice_predictions.csv``; filtered to task ``pe_present_on_image`` when a
``task`` column is present).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

IMAGE_LABEL = "pe_present_on_image"
IMAGE_WEIGHT = 0.07361963
EXAM_WEIGHTS: dict[str, float] = {
    "negative_exam_for_pe": 0.0736196319,
    "indeterminate": 0.09202453988,
    "chronic_pe": 0.1042944785,
    "acute_and_chronic_pe": 0.1042944785,
    "central_pe": 0.1877300613,
    "leftsided_pe": 0.06257668712,
    "rightsided_pe": 0.06257668712,
    "rv_lv_ratio_gte_1": 0.2346625767,
    "rv_lv_ratio_lt_1": 0.0782208589,
}


def _bce(y: np.ndarray, p: np.ndarray, eps: float) -> np.ndarray:
    q = np.clip(p, eps, 1.0 - eps)
    return -(y * np.log(q) + (1.0 - y) * np.log1p(-q))


def _exam_table(exams: pd.DataFrame) -> pd.DataFrame:
    rows = exams[exams["task"].isin(list(EXAM_WEIGHTS))]
    if rows.duplicated(["sample_id", "task"]).any():
        raise ValueError("exams hold a study/label pair twice")
    if rows[["y_true", "y_prob"]].isna().any().any():
        raise ValueError("exam labels and probabilities must be known for every study")
    counts = rows.groupby("sample_id")["task"].nunique()
    incomplete = counts[counts < len(EXAM_WEIGHTS)]
    if len(incomplete):
        raise ValueError(
            f"{len(incomplete)} studies lack some of the nine exam labels, e.g. {incomplete.index[0]!r}"
        )
    return rows


def rsna_pe_weighted_log_loss(exams: pd.DataFrame, images: pd.DataFrame, *, eps: float = 1e-15) -> dict:
    """Competition loss plus its parts: ``loss``, ``exam_loss`` and ``image_loss`` (each a weighted
    mean over its own terms), ``exam_weight`` / ``image_weight`` (denominator shares) and counts."""
    rows = _exam_table(exams)
    studies = pd.Index(rows["sample_id"].unique())
    img = images
    if "task" in img.columns:
        img = img[img["task"] == IMAGE_LABEL]
    if img[["y_true", "y_prob"]].isna().any().any():
        raise ValueError("image labels and probabilities must be known for every slice")
    unknown = ~img["sample_id"].isin(studies)
    if unknown.any():
        raise ValueError(f"{int(unknown.sum())} image rows belong to studies without exam predictions")

    w_exam = rows["task"].map(EXAM_WEIGHTS).to_numpy(float)
    exam_terms = w_exam * _bce(rows["y_true"].to_numpy(float), rows["y_prob"].to_numpy(float), eps)

    y_img = img["y_true"].to_numpy(float)
    q = img.groupby("sample_id")["y_true"].transform("mean").to_numpy(float)  # positive share per study
    w_img = IMAGE_WEIGHT * q
    img_terms = w_img * _bce(y_img, img["y_prob"].to_numpy(float), eps)

    num_e, den_e = float(exam_terms.sum()), float(w_exam.sum())
    num_i, den_i = float(img_terms.sum()), float(w_img.sum())
    return {
        "loss": (num_e + num_i) / (den_e + den_i),
        "exam_loss": num_e / den_e if den_e else None,
        "image_loss": num_i / den_i if den_i else None,
        "exam_weight": den_e,
        "image_weight": den_i,
        "n_studies": len(studies),
        "n_images": len(img),
    }
