"""What one ingest did (:class:`IngestSummary`), and how it stops when its inputs are bad."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medflow.problems import BadInputError, Problem, read_problems


@dataclass
class IngestSummary:
    """What one ingest did. Seconds: decode/transform/compress are summed over workers (CPU time of
    the per-sample work), write is the parent's HDF5/parquet I/O, wall is the elapsed time."""

    modality: str
    kind: str
    n_ok: int
    n_problems: int
    n_missing: int
    n_slices: int = 0
    n_reused: int = 0  # of n_ok: copied from the previous ingest file instead of decoded
    seconds_decode: float = 0.0
    seconds_transform: float = 0.0
    seconds_compress: float = 0.0
    seconds_write: float = 0.0
    seconds_reuse: float = 0.0  # reading reused samples from the previous file (their writing is in write)
    seconds_wall: float = 0.0

    @property
    def seconds(self) -> dict[str, float]:
        return {
            "decode": self.seconds_decode,
            "transform": self.seconds_transform,
            "compress": self.seconds_compress,
            "write": self.seconds_write,
            "reuse": self.seconds_reuse,
            "wall": self.seconds_wall,
        }


def fail_on_problems(problems: list[Problem], problems_path: Path, modality: str) -> None:
    """Raise BadInputError for ``on_bad_input: fail`` (the problems are already written)."""
    first = problems[0]
    raise BadInputError(
        f"{modality}: {len(problems)} input problem(s) and on_bad_input is 'fail'; see {problems_path} "
        f"(first: sample {first.sample_id or '-'}: {first.reason})"
    )


def nothing_usable(modality: str, summary: IngestSummary, problems_path: Path) -> None:
    """Raise BadInputError for a modality of which no sample could be used."""
    problems = read_problems(problems_path)
    first = f"; first: {problems[0].reason}" if problems else ""
    raise BadInputError(
        f"{modality}: no sample could be used ({summary.n_problems} problem(s), {summary.n_missing} empty "
        f"manifest cell(s)){first}. Every model needing {modality} would have no data, so the run stops here "
        f"(on_bad_input: skip leaves out single files, not a whole modality); see {problems_path}"
    )
