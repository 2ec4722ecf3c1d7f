"""Importers: turn a public data layout into a medflow cohort (manifest.csv + cohort.json).

Every public module (or package) here is one importer that registers itself with
``@register_importer``; importing this package imports them all. Adding an importer is therefore one
new module, plus its name in the config schema's ``cohort.source`` enum (tests/test_importers_common.py
checks the two agree). Run one with ``run_importer(name, source, out_dir, **options)``.
"""

from __future__ import annotations

import importlib
import pkgutil

from medflow.cohort.importers._common import ImporterError
from medflow.cohort.importers._registry import (
    Importer,
    Option,
    get_importer,
    list_importers,
    register_importer,
    run_importer,
    tracked_input,
)

__all__ = [
    "Importer",
    "ImporterError",
    "Option",
    "get_importer",
    "list_importers",
    "register_importer",
    "run_importer",
    "tracked_input",
]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
