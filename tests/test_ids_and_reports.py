"""Ids are names, not values (``NA``, ``007``), never spreadsheet formulas; report pages keep their
style sheet and link only to sibling pages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import write_cohort

from medflow.cohort.manifest import ManifestError, load_manifest
from medflow.encoders import read_splits
from medflow.heads.inputs import sample_table
from medflow.io.contracts import read_contract_csv
from medflow.report.build import build_study_report
from medflow.report.context import cohort_flow
from medflow.report.render import css, page_link

STUDY = {
    "labels": ["y"],
    "cohort": {"source": "manifest"},
    "modalities": {"us": {"kind": "image", "size": [8, 8]}},
}


def _splits(path: Path) -> Path:
    pd.DataFrame({
        "sample_id": ["NA", "007", "s3", "s4"], "patient_id": ["NA", "007", "p3", "p4"],
        "center": ["NA", "NA", "B", "B"], "split": ["train", "train", "test", "test"], "fold": [-1, -1, -1, -1],
    }).to_csv(path, index=False)
    return path


def test_contract_files_keep_ids_as_written(tmp_path):
    frame = read_contract_csv(_splits(tmp_path / "splits.csv"))
    assert frame["sample_id"].tolist() == ["NA", "007", "s3", "s4"]
    assert frame["center"].tolist() == ["NA", "NA", "B", "B"]
    assert read_splits(tmp_path / "splits.csv")["sample_id"].tolist()[:2] == ["NA", "007"]


def test_a_sample_called_na_reaches_the_heads_with_its_label(tmp_path):
    splits = _splits(tmp_path / "splits.csv")
    pd.DataFrame({"sample_id": ["NA", "007", "s3", "s4"], "y": ["1", "0", "1", "0"]}).to_csv(
        tmp_path / "manifest.csv", index=False)
    table = sample_table(splits, tmp_path / "manifest.csv", ["y"])
    row = table[table["sample_id"] == "NA"]
    assert len(row) == 1 and float(row["y"].iloc[0]) == 1.0


def test_a_centre_called_na_stays_a_centre_in_the_report_tables(tmp_path):
    splits = _splits(tmp_path / "splits.csv")
    pd.DataFrame({"sample_id": ["NA", "007", "s3", "s4"], "y": [1, 0, 1, 0]}).to_csv(tmp_path / "m.csv", index=False)
    flow = cohort_flow(tmp_path / "m.csv", splits, "y")
    assert {row["center"] for row in flow["by_split_centre"]} == {"NA", "B"}


def _manifest(root: Path, ids: list[str], files: list[str]) -> Path:
    for f in files:
        (root / f).write_bytes(b"x")
    pd.DataFrame({"sample_id": ids, "patient_id": ids, "center": "A", "y": [0, 1] * (len(ids) // 2),
                  "us": files}).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


@pytest.mark.parametrize("bad", ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)"])
def test_ids_that_a_spreadsheet_would_run_as_formulas_are_refused(tmp_path, bad):
    path = _manifest(tmp_path, ["s1", bad], ["a.png", "b.png"])
    with pytest.raises(ManifestError, match="formula") as err:
        load_manifest(path, STUDY)
    assert "row 3" in str(err.value)


def test_a_hash_in_a_file_name_is_part_of_the_name(tmp_path):
    path = _manifest(tmp_path, ["s1", "s2"], ["scan#1.png", "scan#2.png"])
    assert load_manifest(path, STUDY).manifest["us"].tolist() == ["scan#1.png", "scan#2.png"]


def test_the_style_sheet_is_not_html_escaped():
    text = str(css())
    assert '"DejaVu Sans"' in text and "&#34;" not in text


@pytest.mark.parametrize("name", ["javascript:alert(1)", "//evil.example/x", "data:text/html,<b>"])
def test_model_links_stay_relative_whatever_the_model_is_called(name):
    link = page_link(f"{name}_report.html")
    assert link.startswith("./") and ":" not in link and "//" not in link[2:] and "<" not in link


def test_the_study_page_keeps_its_fonts_and_links_only_to_sibling_pages(tmp_path):
    paths = write_cohort(tmp_path)
    out = build_study_report(
        tmp_path / "report.html", study_name="s", config={},
        study={"labels": ["lnm"], "modalities": {}, "split": {"seed": 1, "fractions": {"train": 1.0}, "folds": 0}},
        label="lnm", models={"javascript:alert(1)": ("stage1", paths["good"] / "metrics.json",
                                                     paths["good"] / "predictions.csv")},
        splits=paths["splits"], manifest=paths["manifest"], cohort_info=paths["cohort"],
    )
    html = Path(out).read_text()
    assert 'font-family: "DejaVu Sans"' in html
    hrefs = [h for h in re.findall(r'href="([^"]*)"', html) if not h.startswith("#")]
    assert hrefs == ["./javascript%3Aalert%281%29_report.html"]


def test_reasons_in_reports_carry_no_paths_or_uids(tmp_path):
    splits = _splits(tmp_path / "splits.csv")
    pd.DataFrame({"sample_id": ["NA", "007", "s3", "s4"], "y": [1, 0, 1, 0]}).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"file": ["DOE^JANE/a.dcm"], "sample_id": ["s3"],
                  "reason": ["/data/DOE^JANE/a.dcm: SOPInstanceUID 1.2.840.113619.2.55 occurs twice"]}).to_csv(
        tmp_path / "us.problems.csv", index=False)
    flow = cohort_flow(tmp_path / "m.csv", splits, "y", problems=[tmp_path / "us.problems.csv"])
    [row] = flow["left_out"]
    assert "file" not in row and "DOE" not in row["reason"] and "1.2.840" not in row["reason"]
    assert np.isin(["sample_id", "reason"], list(row)).all()


def test_a_split_with_few_positives_shows_no_interval_and_says_why():
    from medflow.report.render import cell, headline, overview_cell, table_columns

    few = {"n": 9, "prevalence": 1 / 3, "auroc": {"value": 0.0, "delong_ci": [0.0, 0.0], "bootstrap_ci": [0.0, 0.0]}}
    enough = {"n": 300, "prevalence": 0.3, "auroc": {"value": 0.8, "delong_ci": [0.75, 0.85], "bootstrap_ci": [0.74, 0.86]}}
    auroc_ci = next(c for c in table_columns() if c.ci == "auroc.delong_ci")
    assert cell(auroc_ci, few) == "(not estimable)" and overview_cell(auroc_ci, few) == "not estimable"
    assert cell(auroc_ci, enough) == "(0.750–0.850)"
    line = headline("negative_exam_for_pe", {"splits": {"test": few}})
    assert "3 positive and 6 negative: too few for an interval" in line and "0.000–0.000" not in line


def test_a_sample_is_counted_once_and_missing_patient_ids_said_once(tmp_path):
    splits = _splits(tmp_path / "splits.csv")
    pd.DataFrame({"sample_id": ["NA", "007", "s3", "s4"], "y": [1, 0, 1, 0]}).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"file": ["a.png"], "sample_id": ["s3"], "reason": ["truncated"]}).to_csv(
        tmp_path / "us.problems.csv", index=False)
    pd.DataFrame({"sample_id": ["s3", "s4"], "reason": ["lacks us", "lacks us"]}).to_csv(tmp_path / "ex.csv", index=False)
    (tmp_path / "cohort.json").write_text(json.dumps({"grouping": "none", "warnings": [
        "The patch file has no patient or nodule ids: splits cannot be grouped by patient",
        "patient ids are not known for this cohort: splits cannot be grouped by patient",
        "patient ids are not known for this cohort: splits cannot be grouped by patient"]}))
    flow = cohort_flow(tmp_path / "m.csv", splits, "y", problems=[tmp_path / "us.problems.csv"],
                       excluded=tmp_path / "ex.csv", cohort_info=tmp_path / "cohort.json")
    assert flow["n_left_out"] == 2 and [r["sample_id"] for r in flow["left_out"]] == ["s3", "s4"]
    assert len(flow["warnings"]) == 1 and "Grouping by patient was impossible" in flow["warnings"][0]
