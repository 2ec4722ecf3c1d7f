"""Demo cohort imitating the brain-metastasis local-control study: one MR series + mask per lesion.

A patient has 1–3 lesions (samples); each lesion gets its own lesion-centred T1-contrast-like MR
series and a binary mask. Signal: lesion size, necrotic-core fraction and rim heterogeneity follow s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cohort.demo import shapes
from medflow.cohort.demo.common import (
    assign_centres,
    cohort_info,
    fake_patient,
    progress,
    write_csv,
    write_json,
)
from medflow.cohort.demo.signal import draw_labels, latent, sigmoid, task_oracle
from medflow.io.dicom_write import deterministic_uid, write_series

TEMPLATE = "brainmets"
PREVALENCE = 0.25
D = {"mri": 1.2}  # oracle AUC 0.80
CENTRES = {"A": 0.6, "B": 0.4}
MR_GAIN = {"A": 1.0, "B": 1.15}  # receive-coil / scanner scaling differs between centres


def lesion_volume(
    rng: np.random.Generator, size: int, s: float, centre: str
) -> tuple[np.ndarray, np.ndarray]:
    """(MR volume D×H×W as unsigned intensities, lesion mask D×H×W uint8) for one lesion with score s."""
    depth = max(size // 2, 8)
    shape = (depth, size, size)
    brain_c = np.array([depth / 2, size / 2, size / 2]) + rng.normal(0, [0.3, 0.8, 0.8])
    brain_r = np.array([0.46 * depth, 0.42 * size, 0.36 * size]) * rng.uniform(0.93, 1.05)
    head = shapes.ellipsoid_distance(shape, brain_c, brain_r + 0.05 * size)
    brain = shapes.ellipsoid_distance(shape, brain_c, brain_r)
    vol = np.zeros(shape)
    vol[head < 1] = 650.0  # scalp/marrow fat is bright on T1
    tissue = 400.0 + 35.0 * shapes.smooth_noise(rng, shape, size / 12)
    vol = np.where(brain < 1, tissue, vol)
    for side in (-1, 1):  # lateral ventricles (CSF is dark)
        ventricle = shapes.ellipsoid_distance(
            shape,
            brain_c + np.array([0, -0.05 * size, side * 0.07 * size]),
            [0.2 * depth, 0.13 * size, 0.04 * size],
        )
        vol[ventricle < 1] = 120.0

    # lesion somewhere in the brain, away from the edge
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    where = brain_c + direction * rng.uniform(0.1, 0.55) * brain_r
    radius = 0.075 * size * rng.uniform(0.85, 1.15) * float(np.clip(1 + 0.15 * s, 0.5, 1.8))
    radii = np.array([max(radius / 2, 1.2), radius, radius])  # slices are twice as thick as pixels
    dist = shapes.ellipsoid_distance(shape, where, radii, shapes.wobble_coefficients(rng, 0.08, 3))
    mask = dist < 1.0
    core = float(0.2 + 0.5 * sigmoid(s - 0.6))  # necrotic fraction of the radius
    texture = (60.0 + 120.0 * float(sigmoid(s))) * shapes.smooth_noise(rng, shape, 0.8)
    lesion = np.where(dist < core, 300.0, 1100.0) + texture
    vol = np.where(mask, lesion, vol)
    vol = np.abs(vol * MR_GAIN[centre] + rng.normal(0, 20, shape))  # magnitude images: Rician-like noise
    return vol, mask.astype(np.uint8)


def generate(out: Path, *, patients: int, image_size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lesions_per_patient = rng.choice([1, 2, 3], size=patients, p=[0.5, 0.3, 0.2])
    patient_centre = assign_centres(rng, patients, CENTRES)
    pids = [f"P{i + 1:04d}" for i in range(patients)]
    owner = np.repeat(np.arange(patients), lesions_per_patient)
    sids = [f"{pids[p]}_L{k + 1}" for p in range(patients) for k in range(lesions_per_patient[p])]
    n = len(sids)
    y = draw_labels(rng, n, PREVALENCE)
    s = {m: latent(rng, y, d) for m, d in D.items()}
    fakes = [fake_patient(rng, str(c)) for c in patient_centre]
    spacing = 220.0 / image_size

    rows = []
    for i in progress(range(n), TEMPLATE, n):
        sid, p = sids[i], owner[i]
        centre = str(patient_centre[p])
        vol, mask = lesion_volume(rng, image_size, s["mri"][i], centre)
        write_series(
            out / "mri" / sid,
            vol,
            modality="MR",
            spacing=(2 * spacing, spacing, spacing),
            origin=(-110.0, -110.0, float(rng.uniform(-40, 0))),
            patient=fakes[p],
            study_uid=deterministic_uid("demo", TEMPLATE, seed, pids[p], "study"),
            seed_key=("demo", TEMPLATE, seed, sid),
        )
        (out / "lesion_mask").mkdir(exist_ok=True)
        np.save(out / "lesion_mask" / f"{sid}.npy", mask)
        rows.append(
            {
                "sample_id": sid,
                "patient_id": pids[p],
                "center": centre,
                "local_failure": int(y[i]),
                "mri": f"mri/{sid}",
                "lesion_mask": f"lesion_mask/{sid}.npy",
            }
        )

    write_csv(pd.DataFrame(rows), out / "manifest.csv")
    write_json(cohort_info(TEMPLATE, seed, "patient"), out / "cohort.json")
    write_json(
        {"template": TEMPLATE, "tasks": {"local_failure": task_oracle(y, PREVALENCE, D, s, {})}},
        out / "oracle.json",
    )
