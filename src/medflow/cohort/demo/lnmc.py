"""Demo cohort imitating the LUNA16-derived ``all_patches.hdf5`` (Kaggle kmader/lungnodemalignancy).

The file has exactly the public layout: ``ct_slices`` (N, S, S) HU patches centred on a nodule and
``slice_class`` (N, 1) float 0/1, sorted by class (all malignant first) and without patient ids. The
manifest is then made by the LUNA importer, as it would be for the real file.
Signal: nodule size, solid density and spiculation follow s.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from medflow.cohort.demo import shapes
from medflow.cohort.demo.common import adopt_imported, progress, write_json
from medflow.cohort.demo.signal import draw_labels, latent, task_oracle

TEMPLATE = "lnmc"
PREVALENCE = 0.38  # 2526 of 6691 in the public file
D = {"ct_patch": 1.4}  # oracle AUC 0.84
PATCH_FILE = "all_patches.hdf5"


def nodule_patch(rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    """One HU patch (int16) of lung parenchyma with a nodule in the middle."""
    shape = (size, size)
    hu = -850.0 + 40.0 * shapes.smooth_noise(rng, shape, size / 10)
    for _ in range(rng.integers(2, 5)):  # vessels: small elongated soft-tissue structures
        vessel = shapes.soft_ellipse(
            shape,
            rng.uniform(0, size, 2),
            (rng.uniform(0.01, 0.03) * size, rng.uniform(0.06, 0.2) * size),
            rng.uniform(0, np.pi),
        )
        hu = hu * (1 - vessel) + 20.0 * vessel
    if rng.random() < 0.25:  # nodule next to the chest wall
        wall = shapes.soft_ellipse(
            shape, (size * 1.9, size / 2), (size * 1.0, size * 2), rng.uniform(-0.3, 0.3)
        )
        hu = hu * (1 - wall) + 40.0 * wall
    center = size / 2 + rng.normal(0, 0.04 * size, 2)
    radius = 0.09 * size * rng.uniform(0.8, 1.25) * float(np.clip(1 + 0.18 * s, 0.5, 2.0))
    strands = shapes.spikes(
        shape, center, radius, int(rng.poisson(max(0.0, 1.8 * s))), 0.12 * size * (1 + 0.2 * max(s, 0.0)), rng
    )
    hu = hu * (1 - 0.6 * strands) + (-300.0) * 0.6 * strands
    nodule = shapes.soft_ellipse(
        shape,
        center,
        (radius, radius * rng.uniform(0.8, 1.2)),
        rng.uniform(0, np.pi),
        shapes.wobble_coefficients(rng, 0.06),
    )
    density = float(np.clip(-200.0 + 90.0 * s, -650.0, 60.0))
    hu = hu * (1 - nodule) + (density + 30.0 * shapes.smooth_noise(rng, shape, 1.0)) * nodule
    hu += rng.normal(0, 20, shape)
    return np.clip(np.rint(hu), -1024, 400).astype(np.int16)


def write_patch_file(path: Path, *, patches: int, image_size: int, seed: int) -> tuple[np.ndarray, dict]:
    """Write the patch file; return (labels in file order, latent scores in file order)."""
    rng = np.random.default_rng(seed)
    y = draw_labels(rng, patches, PREVALENCE)
    s = {m: latent(rng, y, d) for m, d in D.items()}
    order = np.argsort(-y, kind="stable")  # the public file lists all malignant patches first
    y, s = y[order], {m: v[order] for m, v in s.items()}
    images = np.empty((patches, image_size, image_size), dtype=np.int16)
    for i in progress(range(patches), TEMPLATE, patches):
        images[i] = nodule_patch(rng, image_size, s["ct_patch"][i])
    with h5py.File(path, "w") as f:
        f.create_dataset("ct_slices", data=images)
        f.create_dataset("slice_class", data=y.astype(np.float64)[:, None])
    return y, s


def generate(out: Path, *, patients: int, image_size: int, seed: int) -> None:
    from medflow.cohort.importers.luna import import_luna_patches

    y, s = write_patch_file(out / PATCH_FILE, patches=patients, image_size=image_size, seed=seed)
    import_luna_patches(out / PATCH_FILE, out)
    adopt_imported(out, TEMPLATE, seed, ["ct_patch"])
    write_json(
        {"template": TEMPLATE, "tasks": {"malignant": task_oracle(y, PREVALENCE, D, s, {})}},
        out / "oracle.json",
    )
