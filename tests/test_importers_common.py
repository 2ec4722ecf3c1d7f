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


def _luna(folder: Path) -> Path:
    write_patch_file(folder / "all_patches.hdf5", patches=6, image_size=16, seed=0)
    return folder / "all_patches.hdf5"


def _rsna(folder: Path) -> Path:
    write_rsna_layout(folder, patients=3, image_size=16, seed=0)
    return folder


CASES = {
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
        "cohort": {"source": name, "path": str(path)},
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
    manifest = run_importer(name, path, out, workers=2)  # the workflow passes its threads to every importer
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
    with pytest.raises(ValueError, match="unknown importer 'demo'; choose one of luna-patches, rsna-pe"):
        tracked_input("demo", {})


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
