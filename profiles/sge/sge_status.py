#!/usr/bin/env python3
"""Print running, success or failed for one Grid Engine job id (Snakemake's cluster status command).

A job qstat still lists is running, unless Grid Engine put it into an error state (E in the state
column, e.g. Eqw); a finished job is looked up with qacct, whose record may appear some seconds late:
until it does the job counts as running. Standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys


def queue_state(jobid: str, qstat_output: str) -> str | None:
    """The state column of ``jobid`` in plain ``qstat`` output, None if it is not listed."""
    for line in qstat_output.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0] == jobid:
            return fields[4]
    return None


def accounting_status(qacct_output: str) -> str | None:
    """success / failed from a ``qacct -j`` record (the last one: a rerun job has several), else None."""
    failed = exit_status = None
    for line in qacct_output.splitlines():
        match = re.match(r"^(failed|exit_status)\s+(\d+)", line.strip())
        if match:
            if match.group(1) == "failed":
                failed = int(match.group(2))
            else:
                exit_status = int(match.group(2))
    if failed is None and exit_status is None:
        return None
    return "success" if not failed and not exit_status else "failed"


def status(jobid: str) -> str:
    listed = subprocess.run(["qstat"], capture_output=True, text=True, check=False)
    state = queue_state(jobid, listed.stdout) if listed.returncode == 0 else None
    if state is not None:
        return "failed" if "E" in state else "running"
    record = subprocess.run(["qacct", "-j", jobid], capture_output=True, text=True, check=False)
    found = accounting_status(record.stdout) if record.returncode == 0 else None
    return found or "running"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: sge_status.py JOBID", file=sys.stderr)
        sys.exit(2)
    print(status(sys.argv[1]))
