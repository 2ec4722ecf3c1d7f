"""Demo reports show the oracle AUROC beside each model's: the best the planted signal allows from
the modalities the model reads."""

from __future__ import annotations

import json
from pathlib import Path

from test_report import write_cohort

from medflow.config import load_config
from medflow.heads.specs import expand_heads
from medflow.report.build import build_study_report
from medflow.report.oracle import model_modalities, oracle_auc

REPO = Path(__file__).parents[1]
ORACLE = {"tasks": {"lnm": {"modalities": {"tumour_us": 0.80, "fat_ct": 0.76, "clinical": 0.71},
                            "fused": {"tumour_us+fat_ct": 0.87, "tumour_us+fat_ct+clinical": 0.89}}}}


def test_a_model_reads_the_modalities_of_its_inputs_all_the_way_down():
    config = load_config(REPO / "config/config.yaml")
    clnm, ehr = config["studies"]["clnm"], config["studies"]["ehr"]
    clnm_heads, ehr_heads = expand_heads(clnm), expand_heads(ehr)
    assert model_modalities(clnm, clnm_heads, "tumour_us-sclresnet101") == {"tumour_us"}
    assert model_modalities(clnm, clnm_heads, "dsaf2") == {"tumour_us", "fat_ct"}
    assert model_modalities(clnm, clnm_heads, "dsaf3") == {"tumour_us", "fat_ct", "clinical"}
    # late fusion reads the unimodal heads' predictions, which read the encoders
    assert model_modalities(ehr, ehr_heads, "ecn_late_mortality") == {"ehr", "cxr", "notes"}
    assert model_modalities(ehr, ehr_heads, "c_unimodal_longstay") == {"cxr"}


def test_the_oracle_of_a_set_of_modalities_is_its_fused_entry_in_any_order():
    assert oracle_auc(ORACLE, "lnm", {"clinical", "fat_ct", "tumour_us"}) == 0.89
    assert oracle_auc(ORACLE, "lnm", {"fat_ct"}) == 0.76
    assert oracle_auc(ORACLE, "lnm", {"fat_ct", "clinical"}) is None  # not stated: not guessed
    assert oracle_auc(None, "lnm", {"fat_ct"}) is None and oracle_auc(ORACLE, "other", {"fat_ct"}) is None


def test_the_study_page_shows_each_models_oracle(tmp_path):
    paths = write_cohort(tmp_path)
    (tmp_path / "oracle.json").write_text(json.dumps(ORACLE))
    study = {"labels": ["lnm"], "modalities": {}, "split": {"seed": 1, "fractions": {"train": 1.0}, "folds": 0}}
    models = {n: ("stage1", paths[n] / "metrics.json", paths[n] / "predictions.csv") for n in ("good", "weak")}
    out = build_study_report(tmp_path / "report.html", study_name="s", study=study, config={}, label="lnm",
                             models=models, splits=paths["splits"], manifest=paths["manifest"],
                             oracle=tmp_path / "oracle.json", modalities={"good": ["tumour_us", "fat_ct"],
                                                                          "weak": ["fat_ct"]})
    html = Path(out).read_text()
    assert "oracle AUROC" in html and "<td>0.870</td>" in html and "<td>0.760</td>" in html
    plain = build_study_report(tmp_path / "plain.html", study_name="s", study=study, config={}, label="lnm",
                               models=models, splits=paths["splits"], manifest=paths["manifest"])
    assert "oracle" not in Path(plain).read_text()  # no demo cohort, no oracle column


def test_the_model_page_headline_names_the_oracle():
    from medflow.report.render import headline

    metrics = {"splits": {"test": {"n": 400, "prevalence": 0.4, "auroc": {"value": 0.85, "delong_ci": [0.8, 0.9]}}}}
    assert headline("lnm", metrics, 0.893).endswith("; oracle 0.893")
    assert "oracle" not in headline("lnm", metrics)
