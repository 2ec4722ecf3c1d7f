"""Synthetic (demo) cohorts in the real file formats, with a planted signal of known strength.

``generate_demo_cohort(template, out_dir, patients=, image_size=, seed=)`` writes a complete cohort
folder (manifest.csv, cohort.json, oracle.json and the raw files) for one of the five reference
studies. Each template lives in its own module; ``signal`` holds the oracle maths, ``shapes`` the
drawing helpers.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

from medflow.io.atomic import atomic_path

log = logging.getLogger(__name__)

TEMPLATES = ("clnm", "brainmets", "lnmc", "pe", "ehr")


def generate_demo_cohort(template: str, out_dir: Path, *, patients: int, image_size: int, seed: int) -> Path:
    """Write a complete demo cohort for ``template`` into ``out_dir``; return ``out_dir/'manifest.csv'``.

    The cohort is built in a temporary sibling folder and renamed onto ``out_dir`` (replacing it) only
    when complete, so a killed run never leaves a half cohort. The same arguments give the same bytes.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown demo template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if patients < 2:
        raise ValueError(f"a demo cohort needs at least 2 patients, got {patients}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    out_dir = Path(out_dir)
    module = importlib.import_module(f"medflow.cohort.demo.{template}")
    start = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        module.generate(tmp, patients=patients, image_size=image_size, seed=seed)
    log.info("demo cohort %s written to %s in %.1f s", template, out_dir, time.perf_counter() - start)
    return out_dir / "manifest.csv"


__all__ = ["TEMPLATES", "generate_demo_cohort"]
