"""The importer registry: what the CLI, the workflow and the config schema know about each importer.

An importer is a function ``(source, out_dir, *, option=default, ...) -> manifest path`` registered
with ``@register_importer``. Its options are read from its signature (keyword-only, each with a type
hint and a default), so the CLI's arguments and the function cannot disagree.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from medflow.registry import Registry

log = logging.getLogger(__name__)

ImporterFunc = TypeVar("ImporterFunc", bound=Callable[..., Path])
# The types the CLI can parse from one command-line word.
OPTION_TYPES = (int, float, str, Path)


@dataclass(frozen=True)
class Option:
    """A keyword-only option of an importer, as the CLI offers it (``--name-with-dashes``)."""

    name: str
    type: type
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Importer:
    """A registered importer.

    ``reads`` says what the cohort ``path`` (the ``source`` argument) is; ``tracked`` is the file,
    relative to that path, whose change reruns the import (None: the path itself). It may name an
    option in braces (``"{labels}"``: the cohort's ``labels`` setting, else the option's default)
    and be a tuple of alternatives, the first that exists being tracked (``.csv.gz`` or ``.csv``).
    """

    name: str
    func: Callable[..., Path]
    description: str
    reads: str
    tracked: str | tuple[str, ...] | None
    options: tuple[Option, ...]


REGISTRY: Registry[Importer] = Registry("importer")


def register_importer(
    name: str,
    *,
    description: str,
    reads: str,
    tracked: str | tuple[str, ...] | None = None,
    options: Mapping[str, str] | None = None,
) -> Callable[[ImporterFunc], ImporterFunc]:
    """Decorator registering an importer under ``name`` (its ``cohort.source`` in the config).

    ``options`` maps each keyword-only parameter of the function to its one-line help.
    """

    def decorator(func: ImporterFunc) -> ImporterFunc:
        entry = Importer(name, func, description, reads, tracked, _options(name, func, options or {}))
        REGISTRY.add(name, entry)
        return func

    return decorator


def _options(name: str, func: Callable[..., Path], helps: Mapping[str, str]) -> tuple[Option, ...]:
    """The keyword-only parameters of ``func``; a TypeError (at import time) where the CLI could not offer them."""
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keyword = [p for p in params if p.kind is p.KEYWORD_ONLY]
    where = f"importer {name!r} ({func.__module__}.{func.__qualname__})"
    if len(positional) != 2 or len(positional) + len(keyword) != len(params):
        raise TypeError(f"{where} must take (source, out_dir) and then keyword-only options only")
    names = {p.name for p in keyword}
    if set(helps) != names:
        raise TypeError(
            f"{where}: options= must give one help line per keyword-only option; "
            f"missing {sorted(names - set(helps))}, unknown {sorted(set(helps) - names)}"
        )
    hints = typing.get_type_hints(func)
    out = []
    for p in keyword:
        if p.default is p.empty or hints.get(p.name) not in OPTION_TYPES:
            raise TypeError(
                f"{where}: option {p.name!r} needs a default and one of the types "
                f"{', '.join(t.__name__ for t in OPTION_TYPES)}"
            )
        out.append(Option(p.name, hints[p.name], p.default, helps[p.name]))
    return tuple(out)


def get_importer(name: str) -> Importer:
    return REGISTRY.get(name)


def list_importers() -> list[str]:
    return REGISTRY.names()


def tracked_input(source: str, cohort: Mapping[str, Any]) -> str:
    """The file the workflow tracks as the input of importing ``cohort`` (its ``path`` with ``source``)."""
    entry = get_importer(source)
    if entry.tracked is None:
        return cohort["path"]
    values = {o.name: cohort.get(o.name, o.default) for o in entry.options}
    names = [entry.tracked] if isinstance(entry.tracked, str) else list(entry.tracked)
    candidates = [Path(cohort["path"]) / name.format(**values) for name in names]
    return str(next((c for c in candidates if c.exists()), candidates[0]))


def run_importer(name: str, source: str | Path, out_dir: str | Path, **options: Any) -> Path:
    """Run importer ``name``; options it does not take (e.g. ``workers`` for luna-patches) are dropped.

    Dropping lets the workflow pass its thread count to every importer alike.
    """
    entry = get_importer(name)
    accepted = {o.name for o in entry.options}
    used = {k: v for k, v in options.items() if k in accepted}
    dropped = sorted(set(options) - accepted)
    if dropped:
        log.debug("importer %s ignores option(s) %s", name, ", ".join(dropped))
    return entry.func(Path(source), Path(out_dir), **used)
