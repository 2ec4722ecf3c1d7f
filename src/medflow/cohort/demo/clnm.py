"""Demo cohort imitating the thyroid CLNM study: US tumour PNG + C6-level CT fat slice + clinical table.

Signal: ``tumour_us`` darkness, margin irregularity and microcalcifications follow s_tumour;
``fat_ct`` central-compartment fat density and extent follow s_fat; ``tumour_size_mm`` is an affine
function of s_clin (``multifocal`` depends on s_clin too, ``age`` and ``sex`` are noise).
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
    to_uint8,
    write_csv,
    write_json,
    write_png,
)
from medflow.cohort.demo.signal import draw_labels, latent, sigmoid, task_oracle
from medflow.io.dicom_write import write_image

TEMPLATE = "clnm"
PREVALENCE = 0.4
# Separations: single modalities 0.80 / 0.76 / 0.71 AUC, all three fused 0.89.
D = {"tumour_us": 1.2, "fat_ct": 1.0, "clinical": 0.8}
FUSED = {
    "tumour_us+fat_ct": ["tumour_us", "fat_ct"],
    "tumour_us+fat_ct+clinical": ["tumour_us", "fat_ct", "clinical"],
}
CENTRES = {"A": 0.35, "B": 0.25, "C": 0.40}  # C (the external centre) large enough for a 300-patient external test
# Scanner/gain differences between centres: US brightness (grey levels) and CT calibration (HU).
US_GAIN = {"A": 0.0, "B": 14.0, "C": -12.0}
CT_OFFSET = {"A": 0.0, "B": 8.0, "C": -6.0}


def tumour_us_image(rng: np.random.Generator, size: int, s: float, centre: str) -> np.ndarray:
    """Ultrasound-like crop: speckled parenchyma with a hypoechoic nodule; darker/irregular as s grows."""
    shape = (size, size)
    base = 120.0 + US_GAIN[centre] + rng.normal(0, 5)
    tissue = base * (1 + 0.12 * shapes.smooth_noise(rng, shape, size / 16))
    depth = 1.0 - 0.3 * np.arange(size)[:, None] / size  # attenuation with depth
    skin = 1.0 + 0.6 * np.exp(-np.arange(size)[:, None] / (0.03 * size))
    center = rng.uniform(0.35, 0.65, 2) * size
    radii = rng.uniform(0.14, 0.22, 2) * size
    wobble = shapes.wobble_coefficients(rng, 0.04 + 0.14 * float(sigmoid(s - 0.6)))
    nodule = shapes.soft_ellipse(shape, center, radii, rng.uniform(0, np.pi), wobble)
    contrast = float(np.clip(0.55 - 0.12 * s, 0.08, 0.95))
    image = tissue * (1 - nodule * (1 - contrast)) * depth * skin
    # microcalcifications: bright foci inside the nodule, more of them with higher s
    inside = np.argwhere(nodule > 0.9)
    for r, c in inside[rng.choice(len(inside), size=min(len(inside), rng.poisson(max(0.0, 1.2 * s))))]:
        image[max(r - 1, 0) : r + 1, max(c - 1, 0) : c + 1] = 230.0
    speckle = rng.rayleigh(np.sqrt(2 / np.pi), shape)  # unit-mean multiplicative speckle
    return to_uint8(image * (0.55 + 0.45 * speckle))


def fat_ct_hu(rng: np.random.Generator, size: int, s: float, centre: str) -> np.ndarray:
    """Neck CT slice (HU) at C6: denser, larger central-compartment fat as s grows."""
    shape = (size, size)
    hu = np.full(shape, -1000.0)
    body_c = (0.5 * size + rng.normal(0, 0.02 * size), 0.5 * size + rng.normal(0, 0.02 * size))
    body_r = (rng.uniform(0.34, 0.4) * size, rng.uniform(0.42, 0.47) * size)
    hu[shapes.ellipse(shape, body_c, body_r)] = -100.0  # subcutaneous fat
    inner = shapes.ellipse(shape, body_c, (body_r[0] - 0.06 * size, body_r[1] - 0.06 * size))
    hu[inner] = 45.0 + 12 * shapes.smooth_noise(rng, shape, size / 20)[inner]  # muscle
    scale = float(np.clip(1 + 0.1 * s, 0.6, 1.6))
    fat = shapes.soft_ellipse(
        shape,
        (body_c[0] - 0.22 * size, body_c[1] + rng.normal(0, 0.02 * size)),
        (0.07 * size * scale, 0.13 * size * scale),
        rng.normal(0, 0.15),
        shapes.wobble_coefficients(rng, 0.1),
    )
    fat_hu = -105.0 + 14.0 * s + (8 + 6 * float(sigmoid(s))) * shapes.smooth_noise(rng, shape, 1.0)
    hu = hu * (1 - fat) + fat_hu * fat
    for side in (-1, 1):  # thyroid lobes (iodine-rich, bright)
        lobe = shapes.ellipse(
            shape, (body_c[0] - 0.06 * size, body_c[1] + side * 0.12 * size), (0.07 * size, 0.05 * size)
        )
        hu[lobe] = 100.0
    hu[
        shapes.ellipse(shape, (body_c[0] - 0.06 * size, body_c[1]), (0.06 * size, 0.06 * size))
    ] = -1000.0  # trachea
    spine_c = (body_c[0] + 0.18 * size, body_c[1])
    hu[shapes.ellipse(shape, spine_c, (0.1 * size, 0.1 * size))] = 900.0  # cortical bone
    hu[shapes.ellipse(shape, spine_c, (0.075 * size, 0.075 * size))] = 300.0  # cancellous bone
    hu += CT_OFFSET[centre] + rng.normal(0, 10, shape)
    return np.clip(hu, -1024, 3071)


def generate(out: Path, *, patients: int, image_size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = patients
    ids = [f"P{i + 1:04d}" for i in range(n)]
    y = draw_labels(rng, n, PREVALENCE)
    s = {m: latent(rng, y, d) for m, d in D.items()}
    centres = assign_centres(rng, n, CENTRES)

    rows, clinical = [], []
    for i in progress(range(n), TEMPLATE, n):
        sid, centre = ids[i], str(centres[i])
        write_png(
            out / "tumour_us" / f"{sid}.png", tumour_us_image(rng, image_size, s["tumour_us"][i], centre)
        )
        write_image(
            out / "fat_ct" / f"{sid}.dcm",
            fat_ct_hu(rng, image_size, s["fat_ct"][i], centre),
            modality="CT",
            patient=fake_patient(rng, centre),
            spacing=(160 / image_size, 160 / image_size),
            seed_key=("demo", TEMPLATE, seed, sid, "fat_ct"),
        )
        sc = s["clinical"][i]
        clinical.append(
            {
                "sample_id": sid,
                "age": int(np.clip(np.rint(rng.normal(44, 12)), 18, 85)),
                "sex": "M" if rng.random() < 0.25 else "F",
                "tumour_size_mm": round(max(3.0, 14.0 + 5.0 * sc), 1),
                "multifocal": int(rng.random() < sigmoid(-1.0 + 0.6 * sc)),
            }
        )
        rows.append(
            {
                "sample_id": sid,
                "patient_id": sid,
                "center": centre,
                "lnm": int(y[i]),
                "tumour_us": f"tumour_us/{sid}.png",
                "fat_ct": f"fat_ct/{sid}.dcm",
            }
        )

    write_csv(pd.DataFrame(rows), out / "manifest.csv")
    write_csv(pd.DataFrame(clinical), out / "clinical.csv")
    write_json(cohort_info(TEMPLATE, seed, "patient"), out / "cohort.json")
    oracle = {"template": TEMPLATE, "tasks": {"lnm": task_oracle(y, PREVALENCE, D, s, FUSED)}}
    write_json(oracle, out / "oracle.json")


#: The thyroid seed's split folders, dealt to patients in this repeating order (40 % train, 20 % each other).
SEED_DEAL = ("train", "train", "valid", "itest", "etest")
SEED_ID, SEED_LABEL = "病历号", "group1"


def write_seed_layout(out: Path, *, patients: int, image_size: int, seed: int, labels: str = "3y.csv",
                      clinical: str = "clinical.csv", fat_window: tuple[float, float] = (-250.0, 150.0)) -> dict[str, list[str]]:
    """The same planted signal in the thyroid seed's own layout (the ``clnm-folders`` importer's input):
    ``tumour_us/`` and ``fat_ct/`` each with ``train/ valid/ itest/ etest/<patientID>.png`` (fat_ct a
    CT slice windowed to grey levels, as the seed keeps it), a GB18030 labels CSV (病历号, 性别, group1)
    and a GB18030 clinical CSV keyed by 病历号. Ids are numbers written with two leading zeros in the
    file names and without them in the CSVs. Patients are dealt to the split folders in label order,
    so each folder holds both classes; ``etest`` plays the external hospital (centre C).
    Returns split folder → ids as written in the CSVs."""
    rng = np.random.default_rng(seed)
    y = draw_labels(rng, patients, PREVALENCE)
    s = {m: latent(rng, y, d) for m, d in D.items()}
    by_folder: dict[str, list[str]] = {f: [] for f in dict.fromkeys(SEED_DEAL)}
    rows, table = [], []
    lo, hi = fat_window
    for j, i in enumerate(np.argsort(y, kind="stable")):
        pid, folder = str(100000 + 37 * int(i)), SEED_DEAL[j % len(SEED_DEAL)]
        by_folder[folder].append(pid)
        centre = "C" if folder == "etest" else "A"
        fat = np.clip(fat_ct_hu(rng, image_size, s["fat_ct"][i], centre), lo, hi)
        write_png(out / "tumour_us" / folder / f"00{pid}.png", tumour_us_image(rng, image_size, s["tumour_us"][i], centre))
        write_png(out / "fat_ct" / folder / f"00{pid}.png", np.rint(255 * (fat - lo) / (hi - lo)).astype(np.uint8))
        rows.append({SEED_ID: pid, "性别": "男" if rng.random() < 0.25 else "女", SEED_LABEL: int(y[i])})
        sc = s["clinical"][i]
        table.append({SEED_ID: pid, "age": int(np.clip(np.rint(rng.normal(44, 12)), 18, 85)),
                      "sex": "M" if rng.random() < 0.25 else "F", "tumour_size_mm": round(max(3.0, 14.0 + 5.0 * sc), 1),
                      "multifocal": int(rng.random() < sigmoid(-1.0 + 0.6 * sc))})
    pd.DataFrame(rows).to_csv(out / labels, index=False, encoding="gb18030")
    if clinical:
        pd.DataFrame(table).to_csv(out / clinical, index=False, encoding="gb18030")
    return by_folder
