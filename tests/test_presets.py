"""config/published.yaml: the published systems' settings, valid and runnable as printed in README."""

from __future__ import annotations

import re

import pytest
import yaml
from test_workflow import REPO, job_counts, make_workdir, snakemake

from medflow.config import check_config, load_config

PRESET = REPO / "config/published.yaml"


def test_the_preset_validates_and_holds_the_published_schedules():
    config = load_config(PRESET)
    clnm, bm, lnmc, pe, ehr = (config["studies"][s] for s in ("clnm", "brainmets", "lnmc", "pe", "ehr"))
    encoder = clnm["stage1"]["tumour_us-sclresnet101"]
    assert encoder["pretrain"] == "simclr" and encoder["pretrain_train"]["epochs"] == 200
    assert encoder["pretrain_train"]["lr"] == 1e-4 and clnm["modalities"]["tumour_us"]["size"] == [224, 224]
    assert clnm["stage2"]["dsaf3"]["train"]["schedule"] == "step" and clnm["stage2"]["dsaf3"]["width"] is None
    assert bm["split"]["folds"] == 5 and bm["stage1"]["mri-seresnext50"]["train"]["batch_size"] == 48
    assert bm["modalities"]["mri"]["size"] == [50, 256, 256]
    assert lnmc["stage1"]["ct_patch-convnet"]["train"]["epochs"] == 300
    assert pe["stage1"]["ct_series-resnext50"]["train"]["optimizer"] == "sgd"
    assert pe["stage2"]["lstm_study"]["train"]["lr"] == 0.1
    assert ehr["encoders"]["notes-doc2vec"]["vector_size"] == 512 and ehr["window_hours"] == 48
    assert check_config(config) == config  # defaults already filled: nothing left to guess


def test_the_readme_maps_every_published_setting_to_a_key_of_the_preset():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Published settings"):]
    section = section[: section.index("\n## ", 3)]
    keys = re.findall(r"`((?:studies|evaluation)\.[^`]+)`", section)
    assert len(keys) >= 15
    config = yaml.safe_load(PRESET.read_text())
    for key in keys:
        node = config
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"README names {key}, which the preset lacks"
            node = node[part]


@pytest.mark.slow
def test_the_preset_dry_runs_with_the_readme_command(tmp_path):
    workdir = make_workdir(tmp_path)
    proc = snakemake(workdir, "-n", "--configfile", "config/published.yaml", "--replace-workflow-config",
                     "--cores", "24", "--resources", "gpu=3", "--", "results/clnm/report.html")
    jobs = job_counts(proc.stdout)
    assert jobs["pretrain_stage1"] == 2 and jobs["stage2"] == 7, jobs  # the preset's heads, not config.yaml's
