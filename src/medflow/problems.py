"""Bad input is recorded, never silently dropped: one row per file that could not be used."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from medflow.io.atomic import atomic_path
from medflow.privacy import redact, spellings

PROBLEM_COLUMNS = ("file", "sample_id", "reason")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """A file (or sample) left out, and why, in words a user can act on.

    ``file`` is the manifest cell the user wrote (or the table file named in the config), never a
    path of this machine; ``reason`` names no path or file name (see :meth:`about`).
    """

    file: str
    sample_id: str
    reason: str

    @classmethod
    def about(
        cls,
        cell: str,
        sample_id: str,
        reason: str,
        *,
        sources: Iterable[str | os.PathLike[str] | None] = (),
        root: str | os.PathLike[str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Problem:
        """A problem row whose reason is stripped of every spelling of ``cell`` and of the files
        actually at fault (``sources``: the slice, mask or container a reader named)."""
        names = spellings(cell, root)
        for source in sources:
            names |= spellings(source, root)
        return cls(cell, sample_id, redact(reason, names, labels))


class InputProblem(Exception):
    """Raised by readers for bad input; the message is the reason written to problems.csv."""

    def __init__(self, reason: str, file: str | Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file = None if file is None else str(file)


class BadInputError(RuntimeError):
    """Raised when ``on_bad_input: fail`` and at least one problem was found."""


def write_problems(path: str | Path, problems: Iterable[Problem], *, name_inputs_in_logs: bool = False) -> int:
    """Write ``problems`` as CSV (header always present); log each; return how many.

    The log names the sample and the reason; the manifest cell only with ``name_inputs_in_logs``
    (``privacy.name_inputs_in_logs``), since logs travel further than problems.csv (cluster log
    folders, pasted into issues).
    """
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(PROBLEM_COLUMNS)
        for p in problems:
            # a reason built without Problem.about still must not repeat its own cell
            reason = redact(p.reason, spellings(p.file))
            writer.writerow((spreadsheet_safe(p.file), spreadsheet_safe(p.sample_id), spreadsheet_safe(reason)))
            if name_inputs_in_logs and p.file:
                log.warning("input problem in %s (sample %s): %s", p.file, p.sample_id or "-", reason)
            else:
                log.warning("input problem (sample %s): %s (see %s)", p.sample_id or "-", reason, Path(path).name)
            count += 1
    return count


def spreadsheet_safe(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading ``= + - @`` (or tab/CR) would make it a formula
    when a clinician opens the CSV, so it gets a leading apostrophe (OWASP's CSV-injection advice)."""
    return "'" + value if value and value[0] in "=+-@\t\r" else value


def read_problems(path: str | Path) -> list[Problem]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [Problem(r["file"], r["sample_id"], r["reason"]) for r in csv.DictReader(fh)]
