"""Cluster profiles: the Grid Engine submit/status scripts, and a workflow run through profiles/sge
against stand-in qsub/qstat/qacct commands that run each job script on this machine."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import h5py
import pytest
from test_workflow import REPO, make_workdir, snakemake


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "profiles/sge" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sge_submit = load_script("sge_submit")
sge_status = load_script("sge_status")
SETTINGS = json.loads((REPO / "profiles/sge/settings.json").read_text())


def test_qsub_asks_for_the_jobs_slots_memory_time_and_gpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    props = {"rule": "train_stage1", "wildcards": {"study": "clnm", "model": "tumour/us"}, "threads": 4,
             "resources": {"mem_mb": 8001, "runtime": 90.5, "gpu": 2}}
    command = sge_submit.qsub_command(props, "job.sh", {**SETTINGS, "queue": "gpu.q"})
    assert command[0] == "qsub" and command[-1] == "job.sh"
    assert command[command.index("-N") + 1] == "medflow.train_stage1.clnm.tumour_us"
    assert command[command.index("-pe") + 1:command.index("-pe") + 3] == ["smp", "4"]
    assert command[command.index("-q") + 1] == "gpu.q"
    requests = [command[i + 1] for i, a in enumerate(command) if a == "-l"]
    assert requests == ["h_vmem=2001M", "h_rt=1:30:30", "gpu=2"]  # memory per slot, rounded up
    assert (tmp_path / "logs/sge").is_dir()

    single = sge_submit.qsub_command({"rule": "split", "threads": 1, "resources": {"mem_mb": 1000, "gpu": 0}},
                                     "job.sh", {**SETTINGS, "memory_per_slot": False, "log_dir": None})
    assert "-pe" not in single and "-o" not in single
    assert [single[i + 1] for i, a in enumerate(single) if a == "-l"] == ["h_vmem=1000M"]


def test_job_properties_come_from_the_snakemake_job_script(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/sh\n# properties = {"rule": "split", "threads": 1}\nsnakemake ...\n')
    assert sge_submit.job_properties(script) == {"rule": "split", "threads": 1}
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ValueError, match="no '# properties = ' line"):
        sge_submit.job_properties(script)


QSTAT = """job-ID  prior   name       user         state submit/start at     queue                slots ja-task-ID
-----------------------------------------------------------------------------------------------------------------
    101 0.55500 medflow.sp alice        r     11/24/2026 10:00:01 all.q@node1              1
    102 0.55500 medflow.tr alice        qw    11/24/2026 10:00:02                          4
    103 0.55500 medflow.in alice        Eqw   11/24/2026 10:00:03                          8
"""


def test_status_reads_queue_states_and_accounting_records():
    assert sge_status.queue_state("101", QSTAT) == "r"
    assert sge_status.queue_state("102", QSTAT) == "qw"
    assert sge_status.queue_state("103", QSTAT) == "Eqw"
    assert sge_status.queue_state("10", QSTAT) is None
    assert sge_status.accounting_status("qname all.q\nfailed       0    \nexit_status  0\n") == "success"
    assert sge_status.accounting_status("failed       0\nexit_status  1\n") == "failed"
    assert sge_status.accounting_status("failed       37  : qmaster enforced h_rt limit\nexit_status 137\n") == "failed"
    # a job run twice (rescheduled): the last record decides
    assert sge_status.accounting_status("failed 0\nexit_status 1\nfailed 0\nexit_status 0\n") == "success"
    assert sge_status.accounting_status("error: job id 7 not found\n") is None


FAKE_QSUB = """#!/usr/bin/env bash
# stand-in qsub: run the job script in the background, record the call, print the job id
set -euo pipefail
dir={state}
script="${{@: -1}}"
shopt -s nullglob
calls=("$dir"/*.args)
id=$(( ${{#calls[@]}} + 1000 ))
printf '%s\\n' "$@" > "$dir/$id.args"
( bash "$script" > "$dir/$id.out" 2>&1; echo $? > "$dir/$id.exit" ) &
echo "$id"
"""
FAKE_QSTAT = """#!/usr/bin/env bash
dir={state}
echo "job-ID prior name user state submit/start at queue slots"
for args in "$dir"/*.args; do
  [ -e "$args" ] || continue
  id=$(basename "$args" .args)
  [ -e "$dir/$id.exit" ] || echo "$id 0.5 medflow root r 11/24/2026 10:00:00 all.q@localhost 1"
done
"""
FAKE_QACCT = """#!/usr/bin/env bash
dir={state}
if [ -e "$dir/$2.exit" ]; then echo "failed       0"; echo "exit_status  $(cat "$dir/$2.exit")"
else echo "error: job id $2 not found" >&2; exit 1; fi
"""


def test_workflow_runs_through_the_sge_profile(tmp_path):
    """Every job of a small target goes through qsub with its declared resources, and the outputs
    are the ones a local run makes."""
    (tmp_path / "work").mkdir()
    workdir = make_workdir(tmp_path / "work")
    state, bin_dir = tmp_path / "sge", tmp_path / "bin"
    state.mkdir()
    bin_dir.mkdir()
    for name, text in (("qsub", FAKE_QSUB), ("qstat", FAKE_QSTAT), ("qacct", FAKE_QACCT)):
        path = bin_dir / name
        path.write_text(text.format(state=state))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    targets = ["results/lnmc/splits.csv", "results/lnmc/ingest/ct_patch.h5"]
    proc = snakemake(workdir, "--profile", "profiles/sge", "--max-status-checks-per-second", "5",
                     "--seconds-between-status-checks", "1", *targets, env=env)

    calls = {p.stem: p.read_text().splitlines() for p in state.glob("*.args")}
    by_name = {args[args.index("-N") + 1]: args for args in calls.values()}
    # validate_manifest and split are localrules: they run here, not through qsub
    assert sorted(by_name) == ["medflow.demo_cohort.lnmc", "medflow.ingest_images.lnmc.ct_patch"]
    demo, ingest = by_name["medflow.demo_cohort.lnmc"], by_name["medflow.ingest_images.lnmc.ct_patch"]
    assert "-pe" not in demo and {"h_vmem=2000M", "h_rt=0:30:00"} <= set(demo)
    assert ingest[ingest.index("-pe") + 1:ingest.index("-pe") + 3] == ["smp", "8"]
    assert {"h_vmem=1000M", "h_rt=6:00:00"} <= set(ingest)  # 8000 MB over 8 slots
    assert all((state / f"{job}.exit").read_text().strip() == "0" for job in calls)
    splits = (workdir / "results/lnmc/splits.csv").read_text().splitlines()
    assert splits[0].startswith("sample_id") and len(splits) > 100
    with h5py.File(workdir / "results/lnmc/ingest/ct_patch.h5") as h5:  # the job ran to its end
        assert len(h5["sample_id"]) == len(splits) - 1
    assert "4 of 4 steps (100%) done" in proc.stdout + proc.stderr
