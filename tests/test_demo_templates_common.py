"""What every registered demo template must do, and the registry agreeing with the config schema.

Each template is generated at a tiny size and checked against the study of the same name in
config/config.yaml (a study's template defaults to its name).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medflow.cohort.demo import generate_demo_cohort, get_template, list_templates
from medflow.cohort.manifest import load_manifest
from medflow.config import ConfigError, check_config, load_config

REPO = Path(__file__).parents[1]

CONFIG = Path(__file__).parents[1] / "config" / "config.yaml"
# Tiny: enough rows for the manifest checks, about a second for all templates together.
PATIENTS = {"clnm": 10, "brainmets": 2, "lnmc": 10, "pe": 2, "ehr": 10}


@pytest.fixture(scope="module")
def studies():
    return check_config(yaml.safe_load(CONFIG.read_text()))["studies"]


def test_every_template_has_a_size_and_a_study(studies):
    assert sorted(PATIENTS) == sorted(list_templates())
    templates = {
        s["cohort"].get("template", name) for name, s in studies.items() if s["cohort"]["source"] == "demo"
    }
    assert templates == set(list_templates())


@pytest.mark.parametrize("template", list_templates())
def test_template_writes_a_cohort_that_validates(tmp_path, studies, template):
    manifest = generate_demo_cohort(
        template, tmp_path / template, patients=PATIENTS[template], image_size=16, seed=0
    )
    cohort = load_manifest(manifest, studies[template], missing_files="error")
    assert len(cohort.manifest) >= 2
    info = json.loads((manifest.parent / "cohort.json").read_text())
    assert info["source"] == "demo" and info["template"] == template
    assert (manifest.parent / "oracle.json").is_file()


def test_the_config_refuses_a_demo_study_without_a_registered_template():
    config = load_config(REPO / "config/config.yaml")
    config["studies"] = {"mystudy": config["studies"]["lnmc"]}
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert "cohort.template (default: the study's name) = 'mystudy' is not a demo template" in str(err.value)
    config["studies"]["mystudy"]["cohort"]["template"] = "lnmc"
    assert check_config(config)["studies"]["mystudy"]["cohort"]["template"] == "lnmc"


def test_unknown_template_lists_the_choices(tmp_path):
    assert get_template("pe").module == "medflow.cohort.demo.pe"
    with pytest.raises(
        ValueError, match="unknown demo template 'nope'; choose one of clnm, brainmets, lnmc, pe, ehr"
    ):
        generate_demo_cohort("nope", tmp_path, patients=10, image_size=16, seed=0)
