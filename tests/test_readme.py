"""The README's command lines work as printed (dry-run), in a fresh copy of the workflow."""

from __future__ import annotations

import re
import shlex

import pytest
from test_workflow import REPO, job_counts, make_workdir, snakemake

MISSION = "--cores 24 --resources gpu=3 -- results/clnm/dsaf3_report.html"


def readme_commands() -> list[str]:
    """Every snakemake command line of the README's code blocks, without its trailing comment."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if re.match(r"^(\.venv/bin/)?snakemake\s", line)]


def dry_run_args(command: str) -> list[str]:
    """The command's arguments with ``-n`` first: the rest stays exactly as printed."""
    argv = shlex.split(command)
    assert argv[0].endswith("snakemake"), command
    return ["-n", *argv[1:]]


def test_the_readme_opens_with_the_mission_command_in_its_working_form():
    commands = readme_commands()
    assert commands[0] == f".venv/bin/snakemake {MISSION}"


@pytest.mark.slow
def test_the_mission_command_dry_runs_as_printed_and_the_unguarded_form_is_what_fails(tmp_path):
    workdir = make_workdir(tmp_path)
    proc = snakemake(workdir, *dry_run_args(readme_commands()[0]))
    jobs = job_counts(proc.stdout)
    assert jobs["report"] == 1 and jobs["stage2"] >= 1 and jobs["train_stage1"] == 2, jobs
    # without '--' the target is read as one more resource: that is why the README shows '--'
    unguarded = snakemake(workdir, "-n", *MISSION.replace("-- ", "").split(), check=False)
    assert unguarded.returncode != 0


@pytest.mark.slow
def test_every_readme_command_with_a_multi_value_option_plans_its_target(tmp_path):
    """--forcerun/--until/--resources swallow a target written after them; each README line that uses
    one must still plan its target, not the whole workflow."""
    workdir = make_workdir(tmp_path)
    checked = 0
    for command in readme_commands():
        if not re.search(r"--(forcerun|until|omit-from|resources)\b", command) or "results/" not in command:
            continue
        proc = snakemake(workdir, *dry_run_args(command))
        # a swallowed target leaves Snakemake with its default target: the whole workflow ('all')
        assert "all" not in job_counts(proc.stdout), f"{command!r} plans the whole workflow, not its target"
        checked += 1
    assert checked >= 6, checked


def test_no_readme_command_puts_a_target_right_after_a_multi_value_option():
    offenders = []
    for command in readme_commands():
        argv = shlex.split(command)
        for i, arg in enumerate(argv):
            if arg in ("--resources", "--forcerun", "--until", "--omit-from", "--set-threads", "--set-resources"):
                rest = argv[i + 1:]
                values = rest[: rest.index("--")] if "--" in rest else rest
                stop = next((j for j, a in enumerate(values) if a.startswith("-")), len(values))
                if any("/" in v for v in values[:stop]):
                    offenders.append(command)
    assert offenders == [], offenders

