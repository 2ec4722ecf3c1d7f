#!/usr/bin/env python3
"""Submit one Snakemake job script with qsub and print the job id (Snakemake's cluster submit command).

The job's threads and resources come from the ``# properties = {...}`` line Snakemake writes into the
script; settings.json (beside this file) names the site's queue, parallel environment and resources.
Standard library only: it runs with whatever python3 the submit host has.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SETTINGS = Path(__file__).with_name("settings.json")


def job_properties(jobscript: str | Path) -> dict:
    """The properties Snakemake embedded in the job script."""
    for line in Path(jobscript).read_text(encoding="utf-8").splitlines():
        if line.startswith("# properties = "):
            return json.loads(line[len("# properties = "):])
    raise ValueError(f"{jobscript}: no '# properties = ' line; is this a Snakemake job script?")


def job_name(props: dict) -> str:
    """``medflow.<rule>.<wildcards>``, cut to what qsub accepts (no '/', ':', '@', '\\', '*', '?')."""
    wildcards = ".".join(str(v) for v in (props.get("wildcards") or {}).values())
    base = props.get("rule") or props.get("groupid") or "job"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"medflow.{base}" + (f".{wildcards}" if wildcards else ""))
    return name[:200]


def hms(minutes: float) -> str:
    seconds = round(float(minutes) * 60)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def qsub_command(props: dict, jobscript: str, settings: dict) -> list[str]:
    """The qsub call for one job: slots, memory, wall time and GPUs from its declared resources."""
    threads = max(1, int(props.get("threads") or 1))
    resources = props.get("resources") or {}
    command = ["qsub", "-terse", "-cwd", "-V", "-S", "/bin/bash", "-N", job_name(props)]
    log_dir = settings.get("log_dir")
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        command += ["-o", log_dir, "-e", log_dir]
    if settings.get("queue"):
        command += ["-q", settings["queue"]]
    if threads > 1 and settings.get("parallel_environment"):
        command += ["-pe", settings["parallel_environment"], str(threads)]
    requests = []
    mem_mb = resources.get("mem_mb")
    if mem_mb and settings.get("memory_resource"):
        # h_vmem is counted per slot on most sites: ask for the job's memory divided by its slots
        per = -(-int(mem_mb) // threads) if settings.get("memory_per_slot", True) else int(mem_mb)
        requests.append(f"{settings['memory_resource']}={per}M")
    runtime = resources.get("runtime")
    if runtime and settings.get("runtime_resource"):
        requests.append(f"{settings['runtime_resource']}={hms(runtime)}")
    gpus = int(resources.get("gpu") or 0)
    if gpus > 0 and settings.get("gpu_resource"):
        requests.append(f"{settings['gpu_resource']}={gpus}")
    for request in requests:
        command += ["-l", request]
    return command + list(settings.get("extra_args") or []) + [str(jobscript)]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: sge_submit.py JOBSCRIPT", file=sys.stderr)
        return 2
    settings = json.loads(SETTINGS.read_text(encoding="utf-8")) if SETTINGS.is_file() else {}
    command = qsub_command(job_properties(argv[0]), argv[0], settings)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"qsub failed ({done.returncode}): {' '.join(command)}\n{done.stderr.strip()}", file=sys.stderr)
        return done.returncode
    # -terse prints "12345" (or "12345.1-10:1" for array jobs)
    print(done.stdout.strip().split(".")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
