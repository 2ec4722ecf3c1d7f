"""Bad input is recorded, never silently dropped: one row per file that could not be used."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medflow.io.atomic import atomic_path

PROBLEM_COLUMNS = ("file", "sample_id", "reason")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """A file (or sample) left out, and why, in words a user can act on."""

    file: str
    sample_id: str
    reason: str


class InputProblem(Exception):
    """Raised by readers for bad input; the message is the reason written to problems.csv."""

    def __init__(self, reason: str, file: str | Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file = None if file is None else str(file)


class BadInputError(RuntimeError):
    """Raised when ``on_bad_input: fail`` and at least one problem was found."""


def write_problems(path: str | Path, problems: Iterable[Problem]) -> int:
    """Write ``problems`` as CSV (header always present); log each; return how many."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(PROBLEM_COLUMNS)
        for p in problems:
            # 'cohort/../../data/x.dcm' (a manifest path relative to its cohort root) reads as 'data/x.dcm'
            file = os.path.normpath(p.file) if p.file else p.file
            writer.writerow((file, p.sample_id, p.reason))
            log.warning("left out %s (sample %s): %s", file, p.sample_id, p.reason)
            count += 1
    return count


def read_problems(path: str | Path) -> list[Problem]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [Problem(r["file"], r["sample_id"], r["reason"]) for r in csv.DictReader(fh)]
