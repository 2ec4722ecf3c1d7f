"""Import the LUNA16-derived patch file (Kaggle ``kmader/lungnodemalignancy``, ``all_patches.hdf5``).

The file holds ``ct_slices`` (N, 64, 64) HU-like patches and ``slice_class`` (N, 1) or (N,) 0/1
malignancy labels (often float 1.0/0.0), sorted by class, with no patient, scan or nodule ids. The
importer reads only the labels and the shapes (never the pixels) and writes a manifest whose
``ct_patch`` cells point into the file as ``<path>#<row>``; ingest reads the patches later.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medflow.cohort.importers._common import (
    ImporterError,
    relative_to,
    write_csv_atomic,
    write_json_atomic,
)
from medflow.cohort.importers._registry import register_importer
from medflow.io.hashing import sha256_file

if TYPE_CHECKING:
    import h5py

log = logging.getLogger(__name__)

SOURCE = "luna-patches"
IMAGES_KEY = "ct_slices"
LABELS_KEY = "slice_class"
CENTER = "luna16"
LABEL = "malignant"
MODALITY = "ct_patch"
MANIFEST_COLUMNS = ("sample_id", "patient_id", "center", LABEL, MODALITY)
NO_IDS_WARNING = (
    "The patch file has no patient or nodule ids: splits cannot be grouped by patient, so patches of one "
    "nodule may fall into different splits (optimistic estimates)."
)


def _dataset(f: h5py.File, key: str, path: Path, expected: str) -> h5py.Dataset:
    import h5py

    if key not in f:
        found = ", ".join(sorted(f.keys())) or "none"
        raise ImporterError(f"{path}: dataset {key!r} ({expected}) is missing; keys found: {found}")
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise ImporterError(f"{path}: {key!r} is an HDF5 group, expected a dataset ({expected})")
    if not (np.issubdtype(obj.dtype, np.number) or np.issubdtype(obj.dtype, np.bool_)):
        raise ImporterError(f"{path}: dataset {key!r} has dtype {obj.dtype}, expected numbers ({expected})")
    return obj


def read_labels(path: Path) -> tuple[np.ndarray, tuple[int, ...], str]:
    """Validate the patch file; return (labels as int8 in file order, ct_slices shape, ct_slices dtype).

    Only the label array is read; of ``ct_slices`` only its shape and dtype.
    """
    try:
        import h5py  # here, not at the top: the Snakefile loads every importer to check the config

        f = h5py.File(path, "r")
    except OSError as exc:
        raise ImporterError(f"{path}: cannot be opened as HDF5 ({exc})") from exc
    with f:
        images = _dataset(f, IMAGES_KEY, path, "N×H×W CT patches, e.g. (6691, 64, 64)")
        classes = _dataset(f, LABELS_KEY, path, "N×1 or N labels 0/1, e.g. (6691, 1)")
        if images.ndim != 3:
            raise ImporterError(
                f"{path}: dataset {IMAGES_KEY!r} has shape {images.shape}, expected (N, H, W), e.g. (6691, 64, 64)"
            )
        if not (classes.ndim == 1 or (classes.ndim == 2 and classes.shape[1] == 1)):
            raise ImporterError(
                f"{path}: dataset {LABELS_KEY!r} has shape {classes.shape}, expected (N, 1) or (N,)"
            )
        n = images.shape[0]
        if classes.shape[0] != n:
            raise ImporterError(
                f"{path}: dataset {IMAGES_KEY!r} holds {n} patches {images.shape} but {LABELS_KEY!r} holds "
                f"{classes.shape[0]} labels {classes.shape}; expected one label per patch"
            )
        if n == 0:
            raise ImporterError(f"{path}: datasets {IMAGES_KEY!r} and {LABELS_KEY!r} are empty (N = 0)")
        raw = np.asarray(classes[()]).reshape(n)
        shape, dtype = tuple(int(s) for s in images.shape), str(images.dtype)
    bad = ~np.isin(raw, (0, 1))  # NaN is never 0 or 1
    if bad.any():
        rows = np.flatnonzero(bad)
        first = rows[0]
        raise ImporterError(
            f"{path}: dataset {LABELS_KEY!r} must hold 0 or 1 (1 = malignant); row {first} holds "
            f"{raw[first].item()!r} ({len(rows)} bad row(s) in all)"
        )
    return raw.astype(np.int8), shape, dtype


def is_sorted_by_class(labels: np.ndarray) -> bool:
    """True when both classes occur and the labels change value exactly once (one block per class)."""
    return len(np.unique(labels)) == 2 and int(np.count_nonzero(np.diff(labels))) == 1


@register_importer(
    SOURCE,
    description="LUNA16-derived nodule patches (Kaggle kmader/lungnodemalignancy, all_patches.hdf5)",
    reads="the all_patches.hdf5 patch file",
)
def import_luna_patches(patch_file: Path, out_dir: Path) -> Path:
    """Write ``out_dir/manifest.csv`` and ``out_dir/cohort.json`` for ``patch_file``; return the manifest.

    One row per patch: ``sample_id`` ``patch00000``…, ``patient_id`` = ``sample_id`` (the file has no
    patient ids; cohort.json says ``grouping: none``), ``center`` ``luna16``, ``malignant`` 0/1 and
    ``ct_patch`` = ``<patch file relative to out_dir>#<row>``. Nothing is written when the file is bad.
    """
    patch_file, out_dir = Path(patch_file), Path(out_dir)
    if not patch_file.is_file():
        raise FileNotFoundError(f"patch file not found: {patch_file}")
    labels, shape, dtype = read_labels(patch_file)
    n = len(labels)
    width = len(str(n))
    ids = [f"patch{i:0{width}d}" for i in range(n)]
    ref = relative_to(patch_file, out_dir)
    manifest = pd.DataFrame(
        {
            "sample_id": ids,
            "patient_id": ids,
            "center": CENTER,
            LABEL: labels.astype(np.int64),
            MODALITY: [f"{ref}#{i}" for i in range(n)],
        },
        columns=list(MANIFEST_COLUMNS),
    )
    sorted_by_class = is_sorted_by_class(labels)
    warnings = [NO_IDS_WARNING]
    if sorted_by_class:
        warnings.append(
            "The patch file is sorted by class (all rows of one class first); medflow never relies on row order."
        )
    info = {
        "source": SOURCE,
        "grouping": "none",
        "warnings": warnings,
        "n_samples": n,
        "class_counts": {"0": int(np.count_nonzero(labels == 0)), "1": int(np.count_nonzero(labels == 1))},
        "sorted_by_class": sorted_by_class,
        "labels": [LABEL],
        "images_dataset": {"key": IMAGES_KEY, "shape": list(shape), "dtype": dtype},
        "source_file": str(patch_file.resolve()),
        "source_sha256": sha256_file(patch_file),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(info, out_dir / "cohort.json")
    manifest_path = write_csv_atomic(manifest, out_dir / "manifest.csv")  # last: its presence means done
    log.info(
        "imported %d patches (%d malignant) from %s into %s",
        n,
        info["class_counts"]["1"],
        patch_file,
        manifest_path,
    )
    return manifest_path
