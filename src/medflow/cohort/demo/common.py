"""What every demo template shares: centres, fake PHI, progress bars and deterministic file writers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from PIL import Image

from medflow.io.dicom_write import FakePatient
from medflow.logs import progress_bar

T = TypeVar("T")

_GIVEN = [
    "Maria",
    "John",
    "Wei",
    "Aisha",
    "Carlos",
    "Olga",
    "Kenji",
    "Fatima",
    "Liam",
    "Priya",
    "Hans",
    "Chloe",
]
_FAMILY = [
    "Smith",
    "Garcia",
    "Chen",
    "Okafor",
    "Rossi",
    "Novak",
    "Tanaka",
    "Haddad",
    "Murphy",
    "Patel",
    "Weber",
]
_INSTITUTION = {
    "A": "St Elsewhere University Hospital",
    "B": "Mercy General Hospital",
    "C": "Riverside Regional Medical Centre",
}


def assign_centres(rng: np.random.Generator, n: int, shares: Mapping[str, float]) -> np.ndarray:
    """Centre of each of ``n`` groups (patients), drawn with the given shares; every centre occurs once
    at least when n allows, so an external-centre split is never empty."""
    names = list(shares)
    p = np.array([shares[c] for c in names], dtype=float)
    counts = np.maximum(np.floor(p / p.sum() * n).astype(int), 1 if n >= len(names) else 0)
    while counts.sum() < n:  # hand out the remainder to the largest shares first
        counts[np.argmax(p / p.sum() * n - counts)] += 1
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    centres = np.repeat(np.array(names, dtype=object), counts)
    return centres[rng.permutation(n)]


def fake_patient(rng: np.random.Generator, centre: str) -> FakePatient:
    """Fake identifying header values (name, birth date, MRN, institution) for the DICOM files.

    The MRN is never the manifest's patient_id, so a leak of either can be told apart.
    """
    year = int(rng.integers(1930, 2000))
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return FakePatient(
        name=f"{_FAMILY[rng.integers(len(_FAMILY))]}^{_GIVEN[rng.integers(len(_GIVEN))]}",
        patient_id=f"MRN{int(rng.integers(10**6, 10**7)):07d}",
        birth_date=f"{year:04d}{month:02d}{day:02d}",
        sex=str(rng.choice(["F", "M"])),
        institution=_INSTITUTION.get(centre, f"Hospital {centre}"),
    )


def progress(items: Iterable[T], template: str, total: int | None = None) -> Iterator[T]:
    """A tqdm bar over the samples being written (goes to the rule log under Snakemake)."""
    yield from progress_bar(items, total=total, desc=f"demo {template}", unit="sample")


def write_png(path: Path, pixels: np.ndarray) -> str:
    """8-bit grayscale PNG (Pillow writes no timestamp, so the bytes depend only on the pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L").save(path, optimize=False)
    return str(path)


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """CSV with fixed line endings and float format, so the same cohort gives the same bytes."""
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def write_json(obj: Any, path: Path) -> Path:
    path.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    return path


def cohort_info(template: str, seed: int, grouping: str, warnings: Sequence[str] = (), **extra: Any) -> dict:
    return {
        "source": "demo",
        "template": template,
        "study": template,
        "grouping": grouping,
        "seed": seed,
        "warnings": list(warnings),
        **extra,
    }


def adopt_imported(out: Path, template: str, seed: int, path_columns: Sequence[str], **extra: Any) -> None:
    """Turn what an importer wrote into ``out`` into a demo cohort: manifest paths relative to ``out``
    (the folder is renamed after this), and a cohort.json that says demo but keeps the importer's
    grouping and warnings."""
    manifest = out / "manifest.csv"
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    root = str(out.resolve())
    for col in path_columns:
        if col in frame:
            frame[col] = [_relative(v, out, root) for v in frame[col]]
    write_csv(frame, manifest)
    info_path = out / "cohort.json"
    imported = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    info = cohort_info(
        template,
        seed,
        imported.get("grouping", "none"),
        imported.get("warnings", []),
        imported_as=imported.get("source"),
        **extra,
    )
    write_json(info, info_path)


def _relative(value: str, out: Path, root: str) -> str:
    if not value or not Path(value.split("#", 1)[0]).is_absolute():
        return value
    file_part, sep, ref = value.partition("#")
    resolved = str(Path(file_part).resolve())
    for base in (root, str(out)):
        if resolved.startswith(base + "/"):
            return resolved[len(base) + 1 :] + sep + ref
    return value
