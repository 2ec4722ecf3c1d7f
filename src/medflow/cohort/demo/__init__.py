"""Synthetic (demo) cohorts in the real file formats, with a planted signal of known strength.

``generate_demo_cohort(template, out_dir, patients=, image_size=, seed=)`` writes a complete cohort
folder (manifest.csv, cohort.json, oracle.json and the raw files) for one of the five reference
studies. Each template lives in its own module with a ``generate(out, *, patients, image_size, seed)``
function and is listed here with ``register_template``; ``signal`` holds the oracle maths, ``shapes``
the drawing helpers.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from medflow.io.atomic import atomic_path
from medflow.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Template:
    """A demo template; its module is imported only to generate a cohort, so listing templates is cheap."""

    name: str
    module: str
    description: str


REGISTRY: Registry[Template] = Registry("demo template")


def register_template(name: str, description: str) -> Template:
    """List the template in module ``medflow.cohort.demo.<name>`` under ``name`` (its config ``template``)."""
    return REGISTRY.add(name, Template(name, f"{__name__}.{name}", description))


def get_template(name: str) -> Template:
    return REGISTRY.get(name)


def list_templates() -> list[str]:
    return REGISTRY.names()


register_template("clnm", "thyroid CLNM: ultrasound tumour PNG, CT fat slice, clinical table")
register_template("brainmets", "brain metastases: one MR series and mask per lesion")
register_template(
    "lnmc", "lung nodule malignancy: LUNA16-style all_patches.hdf5, via the luna-patches importer"
)
register_template(
    "pe", "pulmonary embolism: RSNA-PE-style train.csv and DICOM series, via the rsna-pe importer"
)
register_template("ehr", "MIMIC-IV-style admissions: EHR events, chest X-ray, notes")


def generate_demo_cohort(template: str, out_dir: Path, *, patients: int, image_size: int, seed: int) -> Path:
    """Write a complete demo cohort for ``template`` into ``out_dir``; return ``out_dir/'manifest.csv'``.

    The cohort is built in a temporary sibling folder and renamed onto ``out_dir`` (replacing it) only
    when complete, so a killed run never leaves a half cohort. The same arguments give the same bytes.
    """
    entry = get_template(template)
    if patients < 2:
        raise ValueError(f"a demo cohort needs at least 2 patients, got {patients}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    out_dir = Path(out_dir)
    module = importlib.import_module(entry.module)
    start = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        module.generate(tmp, patients=patients, image_size=image_size, seed=seed)
    log.info("demo cohort %s written to %s in %.1f s", template, out_dir, time.perf_counter() - start)
    return out_dir / "manifest.csv"


__all__ = ["Template", "generate_demo_cohort", "get_template", "list_templates", "register_template"]
