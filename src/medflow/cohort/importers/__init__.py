"""Importers: turn a public data layout into a medflow cohort (manifest.csv + cohort.json).

Every importer is called as ``IMPORTERS[name](source, out_dir, **options)`` and returns the path of
the manifest it wrote; options are keyword-only (e.g. ``workers`` for rsna-pe).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medflow.cohort.importers._common import ImporterError
from medflow.cohort.importers.luna import import_luna_patches
from medflow.cohort.importers.rsna_pe import import_rsna_pe

log = logging.getLogger(__name__)

IMPORTERS: dict[str, Callable[..., Path]] = {
    "luna-patches": import_luna_patches,
    "rsna-pe": import_rsna_pe,
}

__all__ = ["IMPORTERS", "ImporterError", "import_luna_patches", "import_rsna_pe", "run_importer"]


def run_importer(name: str, source: str | Path, out_dir: str | Path, **options: Any) -> Path:
    """Run importer ``name``; options it does not take (e.g. ``workers`` for luna-patches) are dropped."""
    if name not in IMPORTERS:
        raise ValueError(f"unknown importer {name!r}; choose one of {', '.join(IMPORTERS)}")
    func = IMPORTERS[name]
    accepted = inspect.signature(func).parameters
    used = {k: v for k, v in options.items() if k in accepted}
    dropped = sorted(set(options) - set(used))
    if dropped:
        log.debug("importer %s ignores option(s) %s", name, ", ".join(dropped))
    return func(Path(source), Path(out_dir), **used)
