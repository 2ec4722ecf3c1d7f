"""What outputs may say about input files (README, "Privacy").

Hospital exports name folders and files after patients (``DOE^JANE_MRN0000000/…``), so a path is
identifying data. Problem reasons are written by readers and by the libraries under them, and both
put paths and file names into their messages; :func:`redact` takes them out again before a reason is
written anywhere. ``problems.csv`` names an input by the manifest cell the user wrote (that is how a
user finds a bad file); reports, metrics, predictions and feature/ingest files name nothing but
sample ids.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

#: What a path or file name becomes in a redacted text.
REDACTED = "<file>"

# An absolute path (POSIX, or Windows with a drive letter) of two or more names that no known
# spelling caught: the net under library messages that quote paths we never saw. It must start a
# word (after a space, quote, bracket, '=' or ':'), so "1/2", "N/A" and "Rows/Columns" are left alone.
_ABSOLUTE_PATH = re.compile(
    r"(?<![^\s'\"(=:\[])(?:[A-Za-z]:)?[/\\][^\s'\"<>|,;()\[\]{}/\\]+[/\\][^\s'\"<>|,;:()\[\]{}]*"
)
# A DICOM UID (dotted digits, at least four parts): fine inside ingest files for joins, never in a report.
_UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){3,}(?![\w.])")


def spellings(path: str | os.PathLike[str] | None, root: str | os.PathLike[str] | None = None) -> set[str]:
    """Every way ``path`` may be quoted in a message: as given, normalised, absolute, resolved,
    relative to ``root``, and its name (a folder's name is how readers quote a series folder)."""
    if path is None or str(path) == "":
        return set()
    text = str(path)
    p = Path(text)
    out = {text, os.path.normpath(text), p.name}
    if root is not None and not p.is_absolute():
        p = Path(root) / p
    absolute = Path(os.path.abspath(p))
    out |= {str(p), str(absolute)}
    with contextlib.suppress(OSError):
        out.add(str(absolute.resolve()))
    if root is not None:
        with contextlib.suppress(ValueError):  # outside the root: nothing more to spell
            out.add(str(absolute.relative_to(Path(os.path.abspath(root)))))
    return {s for s in out if s and s not in ("/", ".", "..")}


def redact(text: str, names: Iterable[str] = (), labels: Mapping[str, str] | None = None) -> str:
    """``text`` without any of ``names`` (whole words only, longest first) and without absolute paths.

    ``labels`` maps a name to what it should read as instead of :data:`REDACTED` (for example a slice
    file to "file 17 of 120 of the series folder, in name order"), so a reason stays actionable.
    """
    labels = dict(labels or {})
    for name in sorted({*names, *labels}, key=len, reverse=True):
        if len(name) < 2:
            continue
        pattern = re.compile(rf"(?<![\w.\-^]){re.escape(name)}(?![\w\-^])")
        text = pattern.sub(lambda _m, n=name: labels.get(n, REDACTED), text)
    return _ABSOLUTE_PATH.sub(REDACTED, text)


def for_report(text: str) -> str:
    """A reason as a report may show it: no paths and no DICOM UIDs (``<UID>``)."""
    return _UID.sub("<UID>", redact(text))
