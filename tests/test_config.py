"""The config schema and cross-field checks: wrong keys or values fail with the key and what is allowed."""

import copy
from pathlib import Path

import pytest
import yaml

from medflow.config import ConfigError, check_config, load_config, path_columns
from medflow.study import stratify_label

CONFIG = Path(__file__).parents[1] / "config" / "config.yaml"


@pytest.fixture
def raw():
    return yaml.safe_load(CONFIG.read_text())


def test_shipped_config_declares_the_five_studies_and_gets_defaults():
    config = load_config(CONFIG)
    assert set(config["studies"]) == {"clnm", "brainmets", "lnmc", "pe", "ehr"}
    assert config["on_bad_input"] == "skip"
    assert config["studies"]["clnm"]["split"]["folds"] == 0  # filled from the schema's default
    assert config["studies"]["brainmets"]["split"]["folds"] == 5
    assert config["studies"]["ehr"]["window_hours"] == 48  # the observation window is the study's
    assert "window_hours" not in config["studies"]["ehr"]["modalities"]["ehr"]
    assert "window_hours" not in config["studies"]["clnm"]  # no window unless a study sets one
    assert stratify_label(config["studies"]["pe"]) == "pe"


def test_path_columns_include_masks_but_not_tables():
    config = load_config(CONFIG)
    assert path_columns(config["studies"]["brainmets"]) == ["mri", "lesion_mask"]
    assert path_columns(config["studies"]["clnm"]) == ["tumour_us", "fat_ct"]
    assert path_columns(config["studies"]["ehr"]) == ["cxr", "notes"]


def test_unknown_key_names_the_key_and_the_allowed_ones(raw):
    raw["studies"]["clnm"]["cohort"]["sourec"] = "demo"
    with pytest.raises(ConfigError) as err:
        check_config(raw)
    msg = str(err.value)
    assert "studies.clnm.cohort" in msg and "'sourec'" in msg
    assert "allowed keys:" in msg and "source" in msg and "patients" in msg


def test_bad_enum_value_lists_the_allowed_values(raw):
    raw["studies"]["lnmc"]["modalities"]["ct_patch"]["kind"] = "imagee"
    with pytest.raises(ConfigError) as err:
        check_config(raw)
    msg = str(err.value)
    assert "studies.lnmc.modalities.ct_patch.kind = 'imagee' is not allowed" in msg
    for kind in ("image", "patches", "volume", "slices", "table", "events", "notes"):
        assert kind in msg


def test_wrong_type_and_missing_required_key(raw):
    raw["studies"]["pe"]["cohort"]["patients"] = "many"
    del raw["studies"]["ehr"]["labels"]
    with pytest.raises(ConfigError) as err:
        check_config(raw)
    msg = str(err.value)
    assert "studies.pe.cohort.patients = 'many' must be of type integer" in msg
    assert "studies.ehr: 'labels' is a required property" in msg


def test_importer_source_needs_a_path(raw):
    raw["studies"]["lnmc"]["cohort"] = {"source": "luna-patches"}
    with pytest.raises(ConfigError, match="'path' is a required property"):
        check_config(raw)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["split"].update(stratify="nope"), "split.stratify = 'nope' is not one of the study's labels"),
        (lambda s: s["split"]["fractions"].update(train=0.9), "must add up to 1"),
        (lambda s: s["modalities"]["tumour_us"].update(size=[8, 8, 8]), "must have 2 numbers for kind image"),
        (lambda s: s["modalities"]["tumour_us"].update(mask="m"), "mask is only allowed for kind volume"),
        (lambda s: s["modalities"]["fat_ct"].update(window=[100, -100]), "low < high"),
        (lambda s: s["stage1"]["tumour_us-sclresnet101"].update(modality="xray"), "is not an image modality of the study: tumour_us"),
        (lambda s: s["stage1"]["tumour_us-sclresnet101"].update(modality="clinical"), "'clinical' is not an image modality"),
        (lambda s: s["stage1"]["tumour_us-sclresnet101"].update(model="se_resnext50_3d"), "does not fit modality 'tumour_us' of kind image"),
        (lambda s: s["stage1"]["tumour_us-sclresnet101"].update(label="lmn"), "label = 'lmn' is not one of the study's labels"),
        (lambda s: s["split"].update(folds=5), "fractions.val must be 0 with folds"),
        (lambda s: s["stage2"]["dsaf3"]["inputs"].append("genes"), "input 'genes' is neither a stage1 model, an encoder nor a table"),
        (lambda s: s["split"].update(folds=1), "folds = 1 is not a cross-validation"),
    ],
)
def test_cross_field_checks(raw, edit, expected):
    study = raw["studies"]["clnm"]
    edit(study)
    with pytest.raises(ConfigError) as err:
        check_config(raw)
    assert expected in str(err.value)


def test_check_config_does_not_modify_its_input(raw):
    before = copy.deepcopy(raw)
    check_config(raw)
    assert raw == before


# --- the observation window: a study setting --------------------------------------------------------


def test_modality_level_window_hours_is_refused_with_where_it_goes(raw):
    raw["studies"]["ehr"]["modalities"]["ehr"]["window_hours"] = 48
    raw["studies"]["ehr"]["cohort"]["patients"] = "many"  # other problems are still listed
    before = copy.deepcopy(raw)
    with pytest.raises(ConfigError) as err:
        check_config(raw)
    msg = str(err.value)
    assert "studies.ehr.modalities.ehr.window_hours: the observation window is a study setting" in msg
    assert "move it to studies.ehr.window_hours" in msg and "every modality" in msg
    assert "unknown key(s) 'window_hours'" not in msg  # said once, clearly
    assert "studies.ehr.cohort.patients = 'many'" in msg
    assert raw == before
    # even where it agrees with the study's: one place only
    del raw["studies"]["ehr"]["cohort"]["patients"]
    with pytest.raises(ConfigError, match=r"move it to studies\.ehr\.window_hours"):
        check_config(raw)


def test_events_encoder_needs_the_study_window(raw):
    del raw["studies"]["ehr"]["window_hours"]
    with pytest.raises(ConfigError, match=r"studies.ehr.encoders.ehr-events: an events encoder needs the study's observation window"):
        check_config(raw)
    raw["studies"]["ehr"]["window_hours"] = 0
    with pytest.raises(ConfigError, match=r"studies.ehr.window_hours: 0 is less than or equal to the minimum"):
        check_config(raw)


def test_ingest_gets_the_study_window_for_every_modality(raw):
    from medflow.config import ingest_spec, manifest_view, time_columns

    config = check_config(raw)
    ehr, clnm = config["studies"]["ehr"], config["studies"]["clnm"]
    for mod in ("ehr", "cxr", "notes"):
        assert ingest_spec(ehr, mod)["window_hours"] == 48
    assert "window_hours" not in ingest_spec(clnm, "tumour_us")
    assert manifest_view(ehr)["window_hours"] == 48  # manifest validation reruns when the window changes
    assert time_columns(ehr) == ["cxr_hours"]


def test_hours_column_clashing_with_a_label_is_refused(raw):
    raw["studies"]["ehr"]["labels"].append("cxr_hours")
    with pytest.raises(ConfigError, match="'cxr_hours' is the acquisition-time column of modality 'cxr'"):
        check_config(raw)
