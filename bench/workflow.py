"""Benchmark Snakemake's own overhead on medflow (prints measured figures; never run as a test).

    .venv/bin/python bench/workflow.py                  # DAG of the 5 studies at 5,000 patients each + no-op run
    .venv/bin/python bench/workflow.py --patients 20000 --repeats 5
    .venv/bin/python bench/workflow.py --noop-dir .     # the no-op run in a finished checkout (`make demo` first)

DAG: a dry run (``snakemake -n``) of config/config.yaml with every study's demo cohort set to
``--patients``, in a fresh copy of the workflow (nothing built yet, so every job is planned).
No-op: ``snakemake --cores 2`` where everything is up to date (``--noop-dir``, default: this
checkout); it must report nothing to do, else the figure would time real work and is not printed.
Targets on the 2-core machine: DAG < 15 s, no-op < 5 s.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
COPIED = ("Snakefile", "workflow", "config", "profiles", "envs")


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed in {cwd}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def large_copy(root: Path, patients: int) -> Path:
    for item in COPIED:
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / item)
    path = root / "config/config.yaml"
    config = yaml.safe_load(path.read_text())
    for study in config["studies"].values():
        study["cohort"]["patients"] = patients
    path.write_text(yaml.safe_dump(config))
    return root


def planned_jobs(output: str) -> int:
    match = re.search(r"^total\s+(\d+)", output, re.MULTILINE)
    return int(match.group(1)) if match else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000, help="demo patients per study (default 5000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noop-dir", type=Path, default=REPO, help="a finished workflow directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="medflow-bench-") as tmp:
        workdir = large_copy(Path(tmp), args.patients)
        runs = [timed(["-n"], workdir) for _ in range(args.repeats)]
        jobs = planned_jobs(runs[0][1])
        seconds = [s for s, _ in runs]
        print(f"DAG (dry run) of 5 studies x {args.patients} patients, {jobs} jobs: "
              f"median {statistics.median(seconds):.2f} s (runs: {', '.join(f'{s:.2f}' for s in seconds)}; "
              "target < 15 s)", flush=True)

    _, plan = timed(["-n"], args.noop_dir)  # never time (or start) real work
    if "Nothing to be done" not in plan:
        print(f"no-op: {args.noop_dir} is not up to date ({planned_jobs(plan)} jobs to run; `make demo` "
              "there first): not measured")
        return
    noop = [timed(["--cores", "2"], args.noop_dir) for _ in range(args.repeats)]
    seconds = [s for s, _ in noop]
    print(f"no-op run in {args.noop_dir}: median {statistics.median(seconds):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in seconds)}; target < 5 s)")


if __name__ == "__main__":
    main()
