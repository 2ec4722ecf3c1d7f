"""What every registered importer must do, and the registry agreeing with the config schema.

A new importer fails ``test_every_importer_has_a_case`` until it gets a ``Case`` below: a tiny source
in its layout and the minimal study its manifest must validate against.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medflow.cohort.demo.lnmc import write_patch_file
from medflow.cohort.demo.pe import write_rsna_layout
from medflow.cohort.importers import (
    get_importer,
    list_importers,
    register_importer,
    run_importer,
    tracked_input,
)
from medflow.cohort.importers.rsna_pe.layout import LABELS as RSNA_LABELS
from medflow.cohort.manifest import load_manifest
from medflow.config import ConfigError, check_config


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Path]  # writes the source into a new, empty folder; returns the cohort path
    labels: list[str]
    modalities: dict[str, dict[str, Any]]
    # the importer's cohort settings for the source at the cohort path (the workflow passes them as options)
    options: Callable[[Path], dict[str, Any]] = lambda path: {}


def _luna(folder: Path) -> Path:
    write_patch_file(folder / "all_patches.hdf5", patches=6, image_size=16, seed=0)
    return folder / "all_patches.hdf5"


def _rsna(folder: Path) -> Path:
    write_rsna_layout(folder, patients=3, image_size=16, seed=0)
    return folder


def _clnm(folder: Path) -> Path:
    import cv2
    import numpy as np

    for modality in ("tumour_us", "fat_ct"):
        for split, pid in (("train", "001"), ("train", "002"), ("valid", "003"), ("itest", "004"), ("etest", "005")):
            (folder / modality / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / modality / split / f"{pid}.png"), np.full((8, 8), int(pid) * 40, np.uint8))
    labels = pd.DataFrame({"病历号": [1, 2, 3, 4, 5], "group1": [0, 1, 0, 1, 1]})
    labels.to_csv(folder / "3y.csv", index=False, encoding="gb18030")
    return folder


def _brainmets(folder: Path) -> Path:
    import numpy as np

    rows = []
    for i in range(4):
        np.save(folder / f"m{i}_img.npy", np.full((3, 4, 5), i, np.float32))
        np.save(folder / f"m{i}_mask.npy", np.ones((3, 4, 5), np.uint8))
        rows.append({"PiCare MetID": f"m{i}", "image_path": f"m{i}_img.npy", "mask_path": f"m{i}_mask.npy",
                     "Failure-binary": i % 2})
    pd.DataFrame(rows).to_csv(folder / "mask_vol_all.csv", index=False)
    np.save(folder / "test_id.npy", np.array(["m3"]))
    return folder / "mask_vol_all.csv"


def _mimic(folder: Path) -> Path:
    from medflow.cohort.importers.mimic_iv.synthetic import write_mimic_tree

    return write_mimic_tree(folder)[0]


def _mimic_options(path: Path) -> dict[str, Any]:
    return {"cxr_path": str(path.parent / "mimic-cxr-jpg"), "note_path": str(path.parent / "mimic-iv-note")}


CASES = {
    "clnm-folders": Case(
        _clnm,
        ["lnm"],
        {"tumour_us": {"kind": "image", "size": [8, 8]}, "fat_ct": {"kind": "image", "size": [8, 8]}},
    ),
    "brainmets-meta": Case(
        _brainmets, ["local_failure"], {"mri": {"kind": "volume", "size": [4, 4, 4], "mask": "lesion_mask"}}
    ),
    "mimic-iv": Case(
        _mimic,
        ["mortality", "longstay", "readmission"],
        {"ehr": {"kind": "events", "file": "events.csv"}, "cxr": {"kind": "image", "size": [16, 16]},
         "notes": {"kind": "notes"}},
        _mimic_options,
    ),
    "luna-patches": Case(_luna, ["malignant"], {"ct_patch": {"kind": "patches", "size": [16, 16]}}),
    "rsna-pe": Case(
        _rsna,
        list(RSNA_LABELS),
        {"ct_series": {"kind": "slices", "size": [16, 16], "slice_labels": "slice_labels.csv"}},
    ),
}


def study_for(name: str, path: Path) -> dict[str, Any]:
    """The minimal study importing ``path`` with ``name``, checked by the config schema (defaults filled)."""
    case = CASES[name]
    study = {
        "cohort": {"source": name, "path": str(path), **case.options(path)},
        "labels": case.labels,
        "modalities": case.modalities,
        "split": {},
    }
    return check_config({"studies": {"s": study}})["studies"]["s"]


def test_every_importer_has_a_case():
    assert sorted(CASES) == sorted(list_importers())


@pytest.mark.parametrize("name", list_importers())
def test_importer_writes_a_manifest_that_validates(tmp_path, name):
    (tmp_path / "raw").mkdir()
    path = CASES[name].build(tmp_path / "raw")
    study = study_for(name, path)
    assert Path(tracked_input(name, study["cohort"])).is_file()

    out = tmp_path / "cohort"
    # the workflow passes its threads to every importer
    manifest = run_importer(name, path, out, workers=2, **CASES[name].options(path))
    assert manifest == out / "manifest.csv"
    assert json.loads((out / "cohort.json").read_text())["source"] == name

    cohort = load_manifest(manifest, study, missing_files="error")  # every path exists
    assert len(cohort.manifest) > 0
    raw = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for column in ("sample_id", "patient_id", "center"):
        assert cohort.manifest[column].tolist() == raw[column].tolist()  # read as written: strings


def test_the_config_knows_exactly_the_registered_importers():
    """The registry is the one list of sources: a new importer needs no schema edit."""
    for name in list_importers():
        assert check_config({"studies": {"s": {"cohort": {"source": name, "path": "x"}, "labels": ["y"],
                                               "modalities": CASES[name].modalities, "split": {}}}})
    with pytest.raises(ConfigError) as err:
        check_config({"studies": {"s": {"cohort": {"source": "toy-csv", "path": "x"}, "labels": ["y"],
                                        "modalities": {"m": {"kind": "table", "file": "m.csv"}}, "split": {}}}})
    assert "cohort.source = 'toy-csv' is not allowed" in str(err.value)
    assert all(name in str(err.value) for name in ["demo", "manifest", *list_importers()])
    with pytest.raises(ConfigError, match="path"):  # every source but demo reads from a path
        check_config({"studies": {"s": {"cohort": {"source": list_importers()[0]}, "labels": ["y"],
                                        "modalities": {"m": {"kind": "table", "file": "m.csv"}}, "split": {}}}})


def test_tracked_input_is_the_path_or_a_file_under_it():
    assert tracked_input("luna-patches", {"path": "data/all_patches.hdf5"}) == "data/all_patches.hdf5"
    assert tracked_input("rsna-pe", {"path": "/data/rsna"}) == "/data/rsna/train.csv"
    with pytest.raises(ValueError, match="unknown importer 'demo'; choose one of ") as err:
        tracked_input("demo", {})
    assert all(name in str(err.value) for name in list_importers())


def test_options_come_from_the_signature():
    [workers] = get_importer("rsna-pe").options
    assert (workers.name, workers.type, workers.default, workers.flag) == ("workers", int, 4, "--workers")
    assert get_importer("luna-patches").options == ()


def _valid(source: Path, out_dir: Path) -> Path:
    return out_dir


def _positional_option(source: Path, out_dir: Path, workers: int = 1) -> Path:
    return out_dir


def _no_default(source: Path, out_dir: Path, *, workers: int) -> Path:
    return out_dir


def _list_option(source: Path, out_dir: Path, *, columns: list = []) -> Path:  # noqa: B006
    return out_dir


@pytest.mark.parametrize(
    ("func", "options", "message"),
    [
        (_positional_option, {}, r"must take \(source, out_dir\) and then keyword-only options only"),
        (_no_default, {"workers": "threads"}, "option 'workers' needs a default"),
        (_list_option, {"columns": "which"}, "option 'columns' needs a default and one of the types int"),
        (_no_default, {}, r"one help line per keyword-only option; missing \['workers'\], unknown \[\]"),
    ],
)
def test_registration_refuses_what_the_cli_cannot_offer(func, options, message):
    with pytest.raises(TypeError, match=message):
        register_importer("bad", description="d", reads="r", options=options)(func)
    assert "bad" not in list_importers()


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="importer 'rsna-pe' is registered twice"):
        register_importer("rsna-pe", description="d", reads="r")(_valid)


def test_the_tracked_file_follows_the_cohort_settings(tmp_path):
    """A labels file named in the config is what the workflow tracks, not the default name."""
    assert tracked_input("clnm-folders", {"path": "/d"}) == "/d/3y.csv"
    assert tracked_input("clnm-folders", {"path": "/d", "labels": "5y.csv"}) == "/d/5y.csv"


def test_the_tracked_file_is_the_first_alternative_that_exists(tmp_path):
    """MIMIC-IV tables come gzipped or plain: the workflow tracks the one the user has."""
    (tmp_path / "hosp").mkdir()
    assert tracked_input("mimic-iv", {"path": str(tmp_path)}) == str(tmp_path / "hosp/d_labitems.csv.gz")
    (tmp_path / "hosp/d_labitems.csv").write_text("itemid,label,fluid,category\n")
    assert tracked_input("mimic-iv", {"path": str(tmp_path)}) == str(tmp_path / "hosp/d_labitems.csv")
