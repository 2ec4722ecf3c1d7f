"""The medflow command: user-facing messages and exit codes."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from medflow.cli import main
from medflow.cohort.demo import get_template, list_templates
from medflow.cohort.demo.lnmc import write_patch_file
from medflow.cohort.importers import _registry, get_importer, list_importers, register_importer
from medflow.registry import Registry

CONFIG = Path(__file__).parents[1] / "config" / "config.yaml"


def test_check_config_lists_studies(capsys):
    assert main(["check-config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "clnm: source=demo labels=lnm modalities: tumour_us (image), fat_ct (image), clinical (table)" in out
    assert out.count("source=") == 5


def test_check_config_reports_bad_key_without_traceback(tmp_path, capsys):
    config = yaml.safe_load(CONFIG.read_text())
    config["on_bad_input"] = "ignore"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "on_bad_input = 'ignore' is not allowed; allowed values: skip, fail" in err
    assert "Traceback" not in err


def test_check_manifest_names_row_and_column(tmp_path, capsys):
    (tmp_path / "us.png").write_bytes(b"x")
    (tmp_path / "ct.dcm").write_bytes(b"x")
    rows = [
        {"sample_id": "a", "patient_id": "p1", "center": "A", "lnm": 1, "tumour_us": "us.png", "fat_ct": "ct.dcm"},
        {"sample_id": "b", "patient_id": "p2", "center": "A", "lnm": 3, "tumour_us": "us.png", "fat_ct": "gone.dcm"},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    code = main(["check-manifest", str(tmp_path / "manifest.csv"), "--study", "clnm", "--config", str(CONFIG)])
    assert code == 1
    err = capsys.readouterr().err
    assert "column 'lnm': labels must be 0 or 1, found '3' in row 3" in err
    assert "column 'fat_ct': file not found in row 3" in err

    rows[1].update(lnm=0, fat_ct="ct.dcm")
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    assert main(["check-manifest", str(tmp_path / "manifest.csv"), "--study", "clnm", "--config", str(CONFIG)]) == 0
    assert "2 samples, 2 patients, centres A: OK" in capsys.readouterr().out


def test_import_has_one_subcommand_per_importer_with_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    out = capsys.readouterr().out
    for name in list_importers():
        assert name in out and get_importer(name).description[:30] in out
    with pytest.raises(SystemExit):
        main(["import", "rsna-pe", "--help"])
    assert "--workers WORKERS  threads for scanning folders (default: 4)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["import", "luna-patches", "in.hdf5", "out", "--workers", "2"])
    assert "unrecognized arguments: --workers 2" in capsys.readouterr().err


def test_import_runs_the_importer_and_prints_the_manifest(tmp_path, capsys):
    write_patch_file(tmp_path / "all_patches.hdf5", patches=4, image_size=16, seed=0)
    assert main(["import", "luna-patches", str(tmp_path / "all_patches.hdf5"), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "manifest.csv")
    assert main(["import", "luna-patches", str(tmp_path / "gone.hdf5"), str(tmp_path / "out")]) == 1
    assert "medflow import: error: patch file not found" in capsys.readouterr().err


def test_a_registered_importer_gets_its_subcommand_and_options(tmp_path, monkeypatch, capsys):
    registry = Registry("importer")
    monkeypatch.setattr(_registry, "REGISTRY", registry)
    calls = []

    @register_importer("toy-csv", description="a toy table", reads="the table.csv folder", tracked="table.csv",
                       options={"max_rows": "rows to read", "sep": "column separator"})  # fmt: skip
    def import_toy(source: Path, out_dir: Path, *, max_rows: int = 10, sep: str = ",") -> Path:
        calls.append((source, out_dir, max_rows, sep))
        return out_dir / "manifest.csv"

    assert main(["import", "toy-csv", "src", str(tmp_path), "--max-rows", "3"]) == 0
    assert calls == [(Path("src"), tmp_path, 3, ",")]
    with pytest.raises(SystemExit):
        main(["import", "toy-csv", "--help"])
    out = capsys.readouterr().out
    assert "the table.csv folder" in out and "--max-rows MAX_ROWS  rows to read (default: 10)" in out


def test_demo_help_describes_every_template(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for name in list_templates():
        assert f"  {name:<10} {get_template(name).description}" in out


@pytest.mark.parametrize("kind", ["heads", "importers", "templates", "metrics"])
def test_list_prints_every_registered_name_a_config_may_use(kind, capsys):
    from medflow.evaluate.registry import list_metrics
    from medflow.heads.registry import list_head_types

    expected = {
        "heads": [*list_head_types(configurable=True), "fusion_grid"],
        "importers": list_importers(),
        "templates": list_templates(),
        "metrics": [m.key for m in list_metrics()],
    }[kind]
    assert main(["list", kind]) == 0
    printed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == expected
