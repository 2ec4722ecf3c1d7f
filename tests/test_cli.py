"""The medflow command: user-facing messages and exit codes."""

from pathlib import Path

import pandas as pd
import yaml

from medflow.cli import main

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
