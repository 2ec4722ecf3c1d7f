"""The clnm study end to end on the thyroid seed's own layout (issue 14): an imported ``clnm-folders``
tree (tumour_us/ and fat_ct/ PNGs in train/ valid/ itest/ etest/, a GB18030 labels CSV keyed by
病历号, a clinical CSV) runs to ``results/clnm/dsaf3_report.html``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import make_workdir, snakemake

from medflow.cohort.demo.clnm import SEED_ID as ID
from medflow.cohort.demo.clnm import SEED_LABEL as LABEL
from medflow.cohort.demo.clnm import write_seed_layout
from medflow.cohort.importers.clnm_folders import import_clnm_folders
from medflow.report.render import split_text

CANARY = "CANARYSRC"  # in the source folder and the labels/clinical file names: never in a report
FOLDER_SPLIT = {"train": "train", "valid": "val", "itest": "test", "etest": "external"}


def write_seed_tree(root: Path) -> dict[str, list[str]]:
    """40 patients, 32×32 PNGs: split folder → ids (train 16, valid/itest/etest 8 each)."""
    return write_seed_layout(root, patients=40, image_size=32, seed=5, labels=f"3y_{CANARY}.csv",
                             clinical=f"clinical_{CANARY}.csv")


def cohort_block(root: Path) -> dict:
    return {"source": "clnm-folders", "path": str(root), "labels": f"3y_{CANARY}.csv", "encoding": "gb18030",
            "id_column": ID, "label_columns": {"lnm": LABEL}, "clinical": f"clinical_{CANARY}.csv"}


def test_seed_tree_imports_with_its_split_folders(tmp_path):
    """The import alone (fast): both PNG modalities, the four split folders, ids matched across files."""
    root = tmp_path / f"{CANARY}_export"
    by_folder = write_seed_tree(root)
    block = {k: v for k, v in cohort_block(root).items() if k not in ("source", "path")}
    manifest = pd.read_csv(import_clnm_folders(root, tmp_path / "cohort", **block), dtype=str, keep_default_na=False)
    assert len(manifest) == 40 and (manifest[["tumour_us", "fat_ct"]] != "").all().all()
    for folder, ids in by_folder.items():
        assert sorted(manifest.loc[manifest["split"] == FOLDER_SPLIT[folder], "sample_id"]) == sorted(ids)
    assert set(manifest.loc[manifest["split"] == "external", "center"]) == {"external"}
    assert (manifest.groupby("split")["lnm"].nunique() == 2).all()  # both classes in every split
    info = json.loads((tmp_path / "cohort" / "cohort.json").read_text())
    assert info["images_per_modality"] == {"tumour_us": 40, "fat_ct": 40}
    assert info["split_counts"] == {"external": 8, "test": 8, "train": 16, "val": 8}
    assert (info["n_missing_images"], info["n_without_labels"], info["n_labels_without_images"]) == (0, 0, 0)
    assert info["clinical"] == {"file": "clinical.csv", "n_rows": 40, "n_unknown_ids": 0, "n_missing": 0}


def test_the_split_text_says_whether_the_cohort_fixed_the_splits():
    study = {"labels": ["lnm"], "split": {"seed": 42, "fractions": {"train": 0.5, "val": 0.25, "test": 0.25},
                                          "external_centers": ["external"]}}
    fixed = split_text(study, {"n_fixed_split": 40, "n_manifest": 40, "source": "clnm-folders"})
    assert fixed.startswith("Fixed by the cohort (clnm-folders)") and "0.25" not in fixed
    some = split_text(study, {"n_fixed_split": 5, "n_manifest": 40})
    assert some.startswith("5 of 40 samples came with a fixed split") and "patient-grouped" in some
    assert split_text(study, {"n_manifest": 40}).startswith("Patient-grouped, stratified on lnm (seed 42)")


def seed_study(root: Path):
    def edit(config):
        study = config["studies"]["clnm"]
        study["cohort"] = cohort_block(root)
        study["modalities"]["fat_ct"].pop("window", None)  # PNG grey levels, not HU (see README)
        study["split"]["external_centers"] = ["external"]
        for net in study["stage1"].values():
            net["pretrain_train"] = {"epochs": 1, "batch_size": 16, "workers": 0, "lr": 0.001}
            net["train"] = {"epochs": 1, "batch_size": 16, "workers": 0, "lr": 0.001}
        for head in study["stage2"].values():
            if "train" in head:
                head["train"] = {**head["train"], "epochs": 1}
            head["cv_folds"] = 2
        config["evaluation"]["bootstrap"] = 100
        config["studies"] = {"clnm": study}

    return edit


@pytest.mark.slow
def test_seed_tree_runs_to_the_dsaf3_report(tmp_path):
    root = tmp_path / f"{CANARY}_export"
    by_folder = write_seed_tree(root)
    (tmp_path / "work").mkdir()
    workdir = make_workdir(tmp_path / "work", seed_study(root))
    t0 = time.perf_counter()
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", "--", "results/clnm/dsaf3_report.html")
    print(f"snakemake to dsaf3_report.html: {time.perf_counter() - t0:.0f} s")

    splits = pd.read_csv(workdir / "results/clnm/splits.csv", dtype=str)
    for folder, ids in by_folder.items():
        assert sorted(splits.loc[splits["split"] == FOLDER_SPLIT[folder], "sample_id"]) == sorted(ids), folder
    page = (workdir / "results/clnm/dsaf3_report.html").read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    for split, n in (("train", 16), ("val", 8), ("test", 8), ("external", 8)):
        assert re.search(rf"\b{split}\b[^\n]{{0,200}}?\b{n}\b", text), split
    assert "Fixed by the cohort (clnm-folders)" in text and "test 0.61" not in text  # not the generated split
    # no source path or file name reaches a report
    for html in (workdir / "results/clnm").glob("*.html"):
        blob = html.read_text()
        assert CANARY not in blob and str(root) not in blob, html.name
        assert not re.search(r"\b00\d{6}\.png\b", blob), html.name
