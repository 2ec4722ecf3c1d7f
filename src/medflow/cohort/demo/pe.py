"""Demo cohort imitating the RSNA-STR PE detection layout (CT pulmonary angiography, slice stacks).

Writes ``train.csv`` (17 columns, one row per slice, exam labels repeated, rows shuffled within a
study because the real order is unreliable) and ``train/<Study>/<Series>/<SOP>.dcm``; the manifest
and ``slice_labels.csv`` come from the RSNA-PE importer, as they would for the real data.

Signal: every study has one filling-defect-like region inside contrast-filled pulmonary arteries on
a contiguous run of slices. Its attenuation is a decreasing function of the study's latent s: in PE
studies (s around d) it is a dark clot near 40–100 HU, in negative studies (s around 0) it is a
faint mixing artefact barely below the ~300 HU of contrast. Only PE runs have pe_present_on_image=1.
Everything else drawn (which arteries, the run, an enlarged right ventricle) is independent of the PE
label, so oracle.json, which accounts for s alone, stays the best achievable AUC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cohort.demo import shapes
from medflow.cohort.demo.common import (
    adopt_imported,
    assign_centres,
    fake_patient,
    progress,
    write_csv,
    write_json,
)
from medflow.cohort.demo.signal import draw_labels, empirical_auc, latent, oracle_auc, sigmoid, task_oracle
from medflow.io.dicom_write import deterministic_uid, write_series

TEMPLATE = "pe"
PREVALENCE = 0.3
D = {"ct_series": 1.4}  # study-level oracle AUC 0.84
COLUMNS = [
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "pe_present_on_image", "negative_exam_for_pe",
    "qa_motion", "qa_contrast", "flow_artifact", "rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1", "leftsided_pe",
    "chronic_pe", "true_filling_defect_not_pe", "rightsided_pe", "acute_and_chronic_pe", "central_pe",
    "indeterminate",
]  # fmt: skip
CONTRAST_HU = 300.0
# Arteries as (row, column, radius) fractions of the image; patient right is image left.
ARTERIES = {"central": (0.40, 0.52, 0.06), "right": (0.44, 0.36, 0.045), "left": (0.44, 0.66, 0.045)}
ARTERY_RANGE = (0.3, 0.85)  # fraction of the stack (caudal → cranial) where the arteries are in plane


def defect_hu(s: float, d: float) -> float:
    """Attenuation of the filling-defect-like region: ~300 HU (invisible) for low s, ~40 HU for high s."""
    return float(CONTRAST_HU - 260.0 * sigmoid(2.0 * (s - d / 2)))


def exam_labels(rng: np.random.Generator, pe: int, s: float) -> tuple[dict[str, int], list[str], bool]:
    """Consistent exam-level labels, the arteries that hold the defect-like region and whether the right
    ventricle is drawn enlarged (RV/LV ≥ 1).

    Nothing drawn here but s may depend on ``pe``: the arteries and the RV size reach the pixels, and
    oracle.json accounts for s alone. RSNA grades RV/LV only in PE exams (both rv labels are 0 in
    negatives), but a dilated RV is not specific to PE (pulmonary hypertension, COPD, left heart
    failure), so every study gets the enlarged RV at the same rate given the (label-independent)
    arteries and only PE exams carry it as a label. Drawn in PE exams only, it marked them for certain
    and lifted the best study-level AUC from the 0.84 of oracle.json to about 0.90.
    """
    lab = dict.fromkeys(COLUMNS[4:], 0)
    u = rng.random()
    sides = ["right"] if u < 0.3 else ["left"] if u < 0.55 else ["right", "left"]
    if rng.random() < 0.3:
        sides = ["central", *sides]
    rv_large = bool(rng.random() < (0.6 if "central" in sides else 0.3))
    if pe:
        lab["rightsided_pe"] = int("right" in sides)
        lab["leftsided_pe"] = int("left" in sides)
        lab["central_pe"] = int("central" in sides)
        lab["rv_lv_ratio_gte_1"], lab["rv_lv_ratio_lt_1"] = int(rv_large), int(not rv_large)
        v = rng.random()
        lab["chronic_pe"], lab["acute_and_chronic_pe"] = int(v < 0.08), int(0.08 <= v < 0.14)
    else:
        lab["negative_exam_for_pe"] = 1
        lab["flow_artifact"] = int(s > 1.5)  # the mixing artefact is visible
        lab["true_filling_defect_not_pe"] = int(rng.random() < 0.03)
    lab["qa_motion"] = int(rng.random() < 0.03)
    lab["qa_contrast"] = int(rng.random() < 0.03)
    return lab, sides, rv_large


def study_volume(
    rng: np.random.Generator, size: int, depth: int, s: float, sides: list[str], run: range, rv_large: bool
) -> np.ndarray:
    """CTPA stack (HU, D×H×W): chest wall, lungs, heart, spine, aorta, contrast-filled arteries, defect."""
    shape = (size, size)
    vol = np.empty((depth, size, size))
    jitter = rng.normal(0, 0.015 * size, 2)
    lung_vessels = [
        (rng.uniform(0.3, 0.65) * size, (0.5 + side * rng.uniform(0.1, 0.3)) * size)
        for side in (-1, 1)
        for _ in range(4)
    ]
    hu_defect = defect_hu(s, D["ct_series"])
    for k in range(depth):
        t = k / max(depth - 1, 1)  # 0 = caudal, 1 = cranial
        body_c = (0.5 * size + jitter[0], 0.5 * size + jitter[1])
        hu = np.full(shape, -1000.0)
        hu[shapes.ellipse(shape, body_c, (0.36 * size, 0.46 * size))] = -100.0
        hu[shapes.ellipse(shape, body_c, (0.33 * size, 0.43 * size))] = 40.0
        lung_r = (0.24 * size * (1 - 0.35 * t), 0.15 * size)
        for side in (-1, 1):
            lung = shapes.ellipse(shape, (body_c[0] - 0.02 * size, body_c[1] + side * 0.2 * size), lung_r)
            hu[lung] = -850.0
        for vy, vx in lung_vessels:
            hu[
                shapes.ellipse(shape, (vy + rng.normal(0, 0.5), vx + rng.normal(0, 0.5)), (0.018 * size,) * 2)
            ] = CONTRAST_HU
        if t < 0.55:  # heart: ventricles filled with contrast, right one larger when RV/LV ≥ 1
            heart_r = 0.13 * size * (1 - t)
            hu[shapes.ellipse(shape, (body_c[0] - 0.05 * size, body_c[1]), (heart_r, heart_r * 1.3))] = 40.0
            rv = heart_r * (0.6 if rv_large else 0.42)
            lv = heart_r * 0.5
            hu[shapes.ellipse(shape, (body_c[0] - 0.07 * size, body_c[1] - 0.07 * size), (rv, rv))] = 250.0
            hu[shapes.ellipse(shape, (body_c[0] - 0.03 * size, body_c[1] + 0.07 * size), (lv, lv))] = 250.0
        hu[shapes.ellipse(shape, (body_c[0] + 0.27 * size, body_c[1]), (0.06 * size,) * 2)] = 700.0  # spine
        hu[shapes.ellipse(shape, (body_c[0] + 0.19 * size, body_c[1] - 0.08 * size), (0.04 * size,) * 2)] = (
            CONTRAST_HU
        )
        if ARTERY_RANGE[0] <= t <= ARTERY_RANGE[1]:
            for name, (ry, rx, rr) in ARTERIES.items():
                c = (ry * size + jitter[0], rx * size + jitter[1])
                hu[shapes.ellipse(shape, c, (rr * size,) * 2)] = CONTRAST_HU
                if k in run and name in sides:
                    dc = (c[0] + rng.normal(0, 0.2), c[1] + rng.normal(0, 0.2))
                    hu[shapes.ellipse(shape, dc, (0.6 * rr * size,) * 2)] = hu_defect
        vol[k] = hu
    return vol + rng.normal(0, 15, vol.shape)


def write_rsna_layout(out: Path, *, patients: int, image_size: int, seed: int) -> dict:
    """Write train.csv and the DICOM tree under ``out``; return the oracle.json content."""
    rng = np.random.default_rng(seed)
    n = patients
    y = draw_labels(rng, n, PREVALENCE)
    s = {m: latent(rng, y, d) for m, d in D.items()}
    centres = assign_centres(rng, n, {"A": 0.5, "B": 0.5})  # only for the fake institution names
    pixel = 340.0 / image_size
    frames, slice_scores, slice_labels = [], [], []
    for i in progress(range(n), TEMPLATE, n):
        depth = int(rng.integers(20, 33))
        lab, sides, rv_large = exam_labels(rng, int(y[i]), float(s["ct_series"][i]))
        lo, hi = int(np.ceil(ARTERY_RANGE[0] * (depth - 1))), int(np.floor(ARTERY_RANGE[1] * (depth - 1)))
        length = int(rng.integers(3, 8))
        start = int(rng.integers(lo, max(hi - length + 2, lo + 1)))
        run = range(start, min(start + length, hi + 1))
        vol = study_volume(rng, image_size, depth, float(s["ct_series"][i]), sides, run, rv_large)
        study = deterministic_uid("demo", TEMPLATE, seed, i, "study")
        series = deterministic_uid("demo", TEMPLATE, seed, i, "series")
        sops = [deterministic_uid("demo", TEMPLATE, seed, i, "sop", k) for k in range(depth)]
        write_series(
            out / "train" / study / series,
            vol,
            modality="CT",
            spacing=(5.0, pixel, pixel),
            origin=(-170.0, -170.0, float(rng.uniform(-250, -150))),
            patient=fake_patient(rng, str(centres[i])),
            study_uid=study,
            series_uid=series,
            sop_uids=sops,
            seed_key=("demo", TEMPLATE, seed, i),
        )
        in_run = np.isin(np.arange(depth), list(run))
        on_image = (in_run & bool(y[i])).astype(int)
        # slice-level oracle score: the study's latent where a defect-like region is drawn, else -inf
        slice_scores.append(np.where(in_run, s["ct_series"][i], -np.inf))
        slice_labels.append(on_image)
        frame = pd.DataFrame(
            {
                "StudyInstanceUID": study,
                "SeriesInstanceUID": series,
                "SOPInstanceUID": sops,
                "pe_present_on_image": on_image,
                **lab,
            }
        )
        frames.append(frame.iloc[rng.permutation(depth)])  # the real CSV order is not anatomical
    write_csv(pd.concat(frames, ignore_index=True)[COLUMNS], out / "train.csv")

    scores, labels = np.concatenate(slice_scores), np.concatenate(slice_labels)
    neg_slices_plain = float(np.mean(np.isinf(scores[labels == 0])))
    d = D["ct_series"]
    slice_task = {
        "level": "slice",
        "prevalence": round(float(labels.mean()), 4),
        "n": len(labels),
        "n_positive": int(labels.sum()),
        "d": dict(D),
        # negative slices without a defect-like region are separable for sure; the rest as the study
        "modalities": {"ct_series": round(neg_slices_plain + (1 - neg_slices_plain) * oracle_auc([d]), 4)},
        "fused": {},
        "empirical": {"modalities": {"ct_series": round(empirical_auc(scores, labels), 4)}, "fused": {}},
    }
    tasks = {
        "pe": {"level": "study", **task_oracle(y, PREVALENCE, D, s, {})},
        "pe_present_on_image": slice_task,
    }
    return {"template": TEMPLATE, "tasks": tasks}


def generate(out: Path, *, patients: int, image_size: int, seed: int) -> None:
    from medflow.cohort.importers.rsna_pe import import_rsna_pe

    oracle = write_rsna_layout(out, patients=patients, image_size=image_size, seed=seed)
    import_rsna_pe(out, out, workers=1)  # the demo_cohort rule asks for one thread
    adopt_imported(out, TEMPLATE, seed, ["ct_series"])
    write_json(oracle, out / "oracle.json")
