"""Shared pieces of the importers: the error type, hashing, relative paths and atomic writers."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medflow.io.atomic import atomic_path

# How many offending rows a message lists before it says "and N more".
MAX_SHOWN = 5


class ImporterError(ValueError):
    """The public layout cannot be imported; the message names the file and what was expected."""


def relative_to(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``path`` relative to ``start`` (POSIX separators); absolute where no relative path exists."""
    absolute = os.path.abspath(path)
    try:
        rel = os.path.relpath(absolute, os.path.abspath(start))
    except ValueError:  # another drive on Windows
        return Path(absolute).as_posix()
    return Path(rel).as_posix()


def shown(items: Sequence[Any], unit: str = "") -> str:
    """``5, 9, 12`` or ``5, 9, 12, 14, 20 and 3 more`` (at most MAX_SHOWN items spelled out)."""
    head = ", ".join(str(i) for i in items[:MAX_SHOWN])
    more = f" and {len(items) - MAX_SHOWN} more" if len(items) > MAX_SHOWN else ""
    return f"{unit}{head}{more}"


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """CSV with fixed line endings, written to a temporary sibling and renamed when complete."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return path


def write_json_atomic(obj: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path
