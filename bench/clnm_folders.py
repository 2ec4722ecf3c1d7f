"""The clnm study end to end on the thyroid seed's own layout, through the ``clnm-folders`` importer.

    .venv/bin/python bench/clnm_folders.py /tmp/clnm-seed                 # 40 patients, 32² PNGs, 1 epoch
    .venv/bin/python bench/clnm_folders.py /tmp/clnm-seed --patients 200 --image-size 64 --full

Writes ``<out>/seed``: ``tumour_us/`` and ``fat_ct/``, each with ``train/ valid/ itest/ etest/<patientID>.png``,
a GB18030 ``3y.csv`` (病历号, 性别, group1) and ``clinical.csv`` keyed by 病历号, with the demo's planted
signal (``medflow.cohort.demo.clnm.write_seed_layout``); copies the workflow to ``<out>/work`` with
config/config.yaml's clnm study alone, its cohort replaced by

    cohort: {source: clnm-folders, path: <out>/seed, labels: 3y.csv, encoding: gb18030,
             id_column: 病历号, label_columns: {lnm: group1}, clinical: clinical.csv}

(fat_ct without its HU window: the seed's PNGs are grey levels already windowed), and, unless
``--full``, one epoch everywhere; then runs Snakemake to ``results/clnm/dsaf3_report.html`` and prints
the wall time and the import's cohort-flow counts (cohort.json). tests/test_clnm_folders_workflow.py
runs the same (marked slow: 4–7 min on 2 busy cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from medflow.cohort.demo.clnm import SEED_ID, SEED_LABEL, write_seed_layout

REPO = Path(__file__).resolve().parents[1]
COUNTS = ("images_per_modality", "n_patients_with_images", "n_label_rows", "n_patients", "n_missing_images",
          "n_without_labels", "n_labels_without_images", "n_bad_labels", "n_split_conflicts", "split_counts",
          "label_counts", "n_problems", "clinical")


def study_config(seed_dir: Path, image_size: int, full: bool) -> dict:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    study = config["studies"]["clnm"]
    study["cohort"] = {"source": "clnm-folders", "path": str(seed_dir), "labels": "3y.csv", "encoding": "gb18030",
                       "id_column": SEED_ID, "label_columns": {"lnm": SEED_LABEL}, "clinical": "clinical.csv"}
    for name in ("tumour_us", "fat_ct"):
        study["modalities"][name]["size"] = [image_size, image_size]
    study["modalities"]["fat_ct"].pop("window", None)
    study["split"]["external_centers"] = ["external"]
    if not full:
        for net in study["stage1"].values():
            net["pretrain_train"] = {"epochs": 1, "batch_size": 16, "workers": 0, "lr": 0.001}
            net["train"] = {"epochs": 1, "batch_size": 16, "workers": 0, "lr": 0.001}
        for head in study["stage2"].values():
            if "train" in head:
                head["train"] = {**head["train"], "epochs": 1}
            head["cv_folds"] = 2
        config["evaluation"]["bootstrap"] = 100
    config["studies"] = {"clnm": study}
    return config


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="folder for the seed tree (seed/) and the workflow copy (work/)")
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--full", action="store_true", help="keep config.yaml's epochs and bootstrap")
    args = p.parse_args(argv)
    seed_dir, work = args.out.resolve() / "seed", args.out.resolve() / "work"
    if seed_dir.exists() or work.exists():
        sys.exit(f"{args.out} already holds seed/ or work/: choose a new folder")
    folders = write_seed_layout(seed_dir, patients=args.patients, image_size=args.image_size, seed=args.seed)
    print("seed tree:", {k: len(v) for k, v in folders.items()}, "patients per split folder, in", seed_dir)
    work.mkdir(parents=True)
    for item in ("Snakefile", "workflow", "config", "profiles", "envs"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, work / item)
    (work / "config/config.yaml").write_text(yaml.safe_dump(study_config(seed_dir, args.image_size, args.full),
                                                            allow_unicode=True))
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(args.cores), "--resources", "gpu=1", "--",
           "results/clnm/dsaf3_report.html"]
    print("running:", " ".join(cmd), "in", work, flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=work, check=True)
    print(f"dsaf3_report.html after {time.perf_counter() - t0:.0f} s: {work / 'results/clnm/dsaf3_report.html'}")
    info = json.loads((work / "results/clnm/cohort.json").read_text())
    print("cohort flow (cohort.json):", json.dumps({k: info.get(k) for k in COUNTS}, ensure_ascii=False))


if __name__ == "__main__":
    main()
