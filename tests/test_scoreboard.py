"""The scoreboard (demo table, bench/science.py): each model's test AUROC beside its oracle, its
training AUROC, and for a fusion head the best single-modality model with the paired DeLong p."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medflow.config import load_config
from medflow.evaluate.metrics import evaluate_predictions, write_metrics
from medflow.io.contracts import write_predictions
from medflow.report.scoreboard import scoreboard, to_markdown
from medflow.workflow.plan import Plan

REPO = Path(__file__).parents[1]


def write_model(plan: Plan, name: str, y: np.ndarray, score: np.ndarray, split: np.ndarray) -> None:
    stage = plan.models["clnm"][name]
    frame = pd.DataFrame({"sample_id": [f"P{i:04d}" for i in range(len(y))], "patient_id": [f"P{i:04d}" for i in range(len(y))],
                          "split": split, "center": "A", "task": "lnm", "y_true": y.astype(float),
                          "y_prob": 1 / (1 + np.exp(-score))})
    path = Path(plan.layout.predictions("clnm", stage, name))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(frame, path)
    write_metrics(evaluate_predictions(frame, {"lnm": 0.5}, n_boot=50), plan.layout.metrics("clnm", stage, name))


def test_rows_give_test_and_training_auroc_oracle_gap_and_the_fusion_comparison(tmp_path):
    config = load_config(REPO / "config/config.yaml")
    config = dict(config, results=str(tmp_path / "results"), resources=str(tmp_path / "resources"),
                  studies={"clnm": config["studies"]["clnm"]})
    plan = Plan(config, request_gpus=False)
    rng = np.random.default_rng(0)
    n = 600
    y = rng.random(n) < 0.4
    split = np.where(np.arange(n) < 300, "test", "train")
    tumour, fat = 1.2 * y + rng.normal(size=n), 1.0 * y + rng.normal(size=n)
    write_model(plan, "tumour_us-sclresnet101", y, tumour, split)
    write_model(plan, "fat_ct-sclresnet101", y, fat, split)
    write_model(plan, "dsaf2", y, 1.2 * tumour + fat, split)
    oracle = Path(plan.layout.oracle("clnm"))
    oracle.parent.mkdir(parents=True)
    oracle.write_text(json.dumps({"tasks": {"lnm": {"modalities": {"tumour_us": 0.80, "fat_ct": 0.76},
                                                    "fused": {"tumour_us+fat_ct": 0.87}}}}))

    table = scoreboard(config).set_index("model")
    assert set(table.index) == {"tumour_us-sclresnet101", "fat_ct-sclresnet101", "dsaf2"}  # unevaluated: absent
    assert (table["n_test"] == 300).all()
    fused = table.loc["dsaf2"]
    assert fused["oracle"] == 0.87 and table.loc["fat_ct-sclresnet101", "oracle"] == 0.76
    assert abs(fused["gap"] - (0.87 - fused["auroc"])) < 1e-12
    assert fused["ci_low"] < fused["auroc"] < fused["ci_high"] and 0 < fused["train_auroc"] < 1
    # the best single-modality model it must match, and the paired test against it
    assert fused["best_input"] == "tumour_us-sclresnet101"
    assert fused["best_input_auroc"] == table.loc["tumour_us-sclresnet101", "auroc"] < fused["auroc"]
    assert 0 < fused["p_vs_best_input"] < 0.05
    assert pd.isna(table.loc["tumour_us-sclresnet101", "best_input"])  # a stage-1 network fuses nothing
    text = to_markdown(scoreboard(config))
    assert text.count("\n") == 4 and "| dsaf2 | lnm | 300 |" in text
