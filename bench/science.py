"""Do the demo models learn what was planted? Every study at several seeds, beside its oracle.

    .venv/bin/python bench/science.py                          # 3 seeds, all five studies, 2 cores
    .venv/bin/python bench/science.py --seeds 1 2 --study clnm --study lnmc --cores 2
    .venv/bin/python bench/science.py --table-only --work /tmp/medflow-science   # re-tabulate finished runs

For each seed s the workflow is copied into ``--work``/seed-s with config/config.yaml changed in
seeds only: every demo generator draws its cohort with its own seed + s, every split, every
network, encoder and head trains with seed s. Snakemake then builds every model's metrics.json
(no reports). The table gives, per model and task, the test AUROC mean ± sd over the seeds beside
the oracle AUROC of the model's modalities, the mean gap, the mean training AUROC and the number of
seeds where a fusion head matched or beat its best single input (paired DeLong p per seed in the
CSV). Results: ``--work``/science.csv (one row per seed, model and task) and the Markdown on stdout.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medflow.config import check_config
from medflow.report.scoreboard import scoreboard, to_markdown
from medflow.workflow.plan import Plan

REPO = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "workflow", "config", "profiles", "envs")


def reseeded(config: dict[str, Any], seed: int, studies: list[str]) -> dict[str, Any]:
    """``config`` with only ``studies``, each drawn and trained with ``seed`` (nothing else changed)."""
    config = dict(config, studies={name: config["studies"][name] for name in studies})
    for study in config["studies"].values():
        if study["cohort"].get("source") == "demo":
            study["cohort"]["seed"] = int(study["cohort"].get("seed", 0)) + seed
        study["split"]["seed"] = seed
        for model in study.get("stage1", {}).values():
            for key in ("train", "pretrain_train"):
                if key in model or key == "train":
                    model[key] = {**(model.get(key) or {}), "seed": seed}
        for head in study.get("stage2", {}).values():
            head["train"] = {**(head.get("train") or {}), "seed": seed}
            head["seed"] = seed
        for encoder in study.get("encoders", {}).values():
            encoder["seed"] = seed
    return config


def prepare(work: Path, seed: int, studies: list[str]) -> Path:
    root = work / f"seed-{seed}"
    root.mkdir(parents=True, exist_ok=True)
    for item in COPIED:
        target = root / item
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text(encoding="utf-8"))
    (root / "config/config.yaml").write_text(yaml.safe_dump(reseeded(config, seed, studies), sort_keys=False),
                                             encoding="utf-8")
    return root


def checked(root: Path) -> dict[str, Any]:
    config = yaml.safe_load((root / "config/config.yaml").read_text(encoding="utf-8"))
    config = check_config(config)
    # the layout's paths are relative to the run folder
    return dict(config, results=str(root / config["results"]), resources=str(root / config["resources"]))


def metrics_targets(root: Path) -> list[str]:
    plan = Plan(checked(root), request_gpus=False)
    return [str(Path(plan.layout.metrics(study, stage, name)).relative_to(root))
            for study, models in plan.models.items() for name, stage in models.items()]


def run(root: Path, cores: int) -> float:
    start = time.perf_counter()
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--", *metrics_targets(root)]
    log = root / "science.log"
    with log.open("w") as out:
        done = subprocess.run(command, cwd=root, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed in {root}; see {log}")
    return time.perf_counter() - start


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd of the test AUROC per model and task over the seeds, beside the oracle."""
    rows = rows.assign(fusion_ok=(rows["auroc"] >= rows["best_input_auroc"]).where(rows["best_input"].notna()))
    grouped = rows.groupby(["study", "model", "task"], sort=False)
    table = grouped.agg(seeds=("seed", "nunique"), n_test=("n_test", "mean"), auroc_mean=("auroc", "mean"),
                        auroc_sd=("auroc", "std"), oracle=("oracle", "mean"), gap=("gap", "mean"),
                        train_auroc=("train_auroc", "mean"), fusion_ok=("fusion_ok", "sum"),
                        fusion_compared=("fusion_ok", "count")).reset_index()
    table["auroc"] = [f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f}"
                      for m, s in zip(table.pop("auroc_mean"), table.pop("auroc_sd"), strict=True)]
    table["≥ best input"] = [f"{int(ok)}/{int(n)}" if n else "–"
                             for ok, n in zip(table.pop("fusion_ok"), table.pop("fusion_compared"), strict=True)]
    return table[["study", "model", "task", "seeds", "n_test", "auroc", "oracle", "gap", "train_auroc",
                  "≥ best input"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--study", action="append", default=[], help="one study (repeat; default: all five)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/medflow-science"))
    parser.add_argument("--table-only", action="store_true", help="tabulate the runs already in --work")
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config/config.yaml").read_text(encoding="utf-8"))
    studies = args.study or list(config["studies"])
    frames = []
    for seed in args.seeds:
        root = args.work / f"seed-{seed}"
        if not args.table_only:
            root = prepare(args.work, seed, studies)
            seconds = run(root, args.cores)
            print(f"seed {seed}: {seconds / 60:.1f} min", file=sys.stderr)
        frames.append(scoreboard(checked(root), studies).assign(seed=seed))
    rows = pd.concat(frames, ignore_index=True)
    rows.to_csv(args.work / "science.csv", index=False)
    print(to_markdown(summarise(rows)))


if __name__ == "__main__":
    main()
