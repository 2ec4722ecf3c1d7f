"""Every registered head type (medflow.heads.registry) fits and scores a tiny planted-signal cohort
with inputs of the kind its entry says it reads; the config schema offers exactly the configurable
types; listing and building the torch-free types imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_heads import make_cohort

from medflow.config import ConfigError, check_config, load_config
from medflow.heads.registry import HeadType, get_head_type, list_head_types, register_head
from medflow.heads.run import run_head
from medflow.io.contracts import PREDICTION_COLUMNS, read_contract_csv

REPO = Path(__file__).parents[1]

# small settings every type understands or ignores (dsaf needs `width`: its two inputs differ in size)
TINY = {"cv_folds": 2, "width": 16, "hidden": 8, "train": {"epochs": 2, "batch_size": 16}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_cohort(tmp_path_factory.mktemp("cohort"), n=80, seed=2, slices=True)


def other_heads_predictions(cohort: dict[str, Path], root: Path) -> dict[str, str]:
    """predictions.csv of two made-up heads, for a type that reads other heads' predictions."""
    samples = pd.read_csv(cohort["splits"], dtype=str).merge(pd.read_csv(cohort["manifest"], dtype={"sample_id": str})[
        ["sample_id", "y"]], on="sample_id")
    rng = np.random.default_rng(0)
    out = {}
    for name in ("a", "b"):
        frame = samples.assign(task="y", y_true=samples["y"].astype(float),
                               y_prob=np.clip(0.3 + 0.4 * samples["y"] + rng.normal(0, 0.2, len(samples)), 0, 1))
        (root / name).mkdir(parents=True, exist_ok=True)
        frame[list(PREDICTION_COLUMNS)].to_csv(root / name / "predictions.csv", index=False)
        out[name] = str(root / name / "predictions.csv")
    return out


def inputs_for(head_type: HeadType, cohort: dict[str, Path], tmp: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The inputs a head of this type reads, as its entry describes them."""
    if head_type.reads == "predictions":
        return ["a", "b"], {"predictions": other_heads_predictions(cohort, tmp / "stage2")}
    names = ["seq"] if head_type.sequences else ["a", "b"]  # embeddings are feature files too
    files = {"features": {name: str(cohort[name]) for name in names}}
    if head_type.slices:
        files["slices"] = {"stack": str(cohort["stack"])}
    return names, files


@pytest.mark.parametrize("name", list_head_types())
def test_every_head_type_scores_each_sample_once_by_id(tmp_path: Path, cohort: dict[str, Path], name: str) -> None:
    inputs, files = inputs_for(get_head_type(name), cohort, tmp_path)
    out = tmp_path / "out"
    run_head(name, {"type": name, "inputs": inputs, "tasks": ["y"], **TINY}, splits=cohort["splits"],
             manifest=cohort["manifest"], files=files, out_dir=out, device=torch.device("cpu"))
    frame = read_contract_csv(out / "predictions.csv")
    assert set(frame.task) == {"y"}
    splits = read_contract_csv(cohort["splits"])
    assert frame.sample_id.is_unique and set(frame.sample_id) == set(splits.sample_id)
    assert frame.y_prob.notna().all() and frame.y_prob.between(0, 1).all()
    labels = pd.read_csv(cohort["manifest"], dtype={"sample_id": str}).set_index("sample_id").y
    np.testing.assert_array_equal(frame.y_true, labels[frame.sample_id].to_numpy())  # each row is its sample's
    assert json.loads((out / "head.json").read_text())["type"] == name


def _lnmc_with_head(spec: dict) -> dict:
    config = load_config(REPO / "config/config.yaml")
    config["studies"] = {"lnmc": config["studies"]["lnmc"]}
    config["studies"]["lnmc"]["stage2"] = {"h": spec}
    return config


@pytest.mark.parametrize("name", list_head_types(configurable=True))
def test_the_config_accepts_every_configurable_head_type(name: str) -> None:
    """The registry is the one list of head types: the config check reads it (the schema only says
    ``type`` is a string), so a new type needs no schema edit."""
    spec = {"type": name, "inputs": ["ct_patch-convnet"]}
    try:
        check_config(_lnmc_with_head(spec))
    except ConfigError as err:  # a type may need more settings, never a different type list
        assert "is not allowed" not in str(err), err


def test_the_config_refuses_an_unregistered_head_type_naming_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as err:
        check_config(_lnmc_with_head({"type": "knn", "inputs": ["ct_patch-convnet"]}))
    assert "stage2.h.type = 'knn' is not allowed" in str(err.value)
    assert all(t in str(err.value) for t in [*list_head_types(configurable=True), "fusion_grid"])
    assert "fusion_grid" not in list_head_types()  # a grid expands into heads; it is none itself


def test_listing_and_building_the_torch_free_types_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "import medflow.config, medflow.heads.specs, medflow.report.targets\n"
        "from medflow.heads.registry import build_head, list_head_types\n"
        "assert 'torch' not in sys.modules, 'listing heads imported torch'\n"
        "for name in list_head_types(uses_gpu=False):\n"
        "    build_head({'type': name, 'inputs': ['a']}, ['y'])\n"
        "    assert 'torch' not in sys.modules, name\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_type_is_registered_once_and_unknown_types_name_the_known_ones() -> None:
    with pytest.raises(ValueError, match="head type 'logreg' is registered twice"):
        register_head(HeadType("logreg", "medflow.heads.classical:LogisticRegressionHead", "again"))
    with pytest.raises(ValueError, match=r"unknown head type 'knn'; choose one of .*logreg"):
        get_head_type("knn")
