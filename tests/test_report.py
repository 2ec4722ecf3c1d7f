"""The HTML report: self-contained, escapes data text, shows what a reviewer needs, and renders in a
real headless browser (Chromium) without console errors with the ROC figure and metrics visible."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medflow.evaluate.run import evaluate_model
from medflow.report.build import build_head_report, build_study_report

EVIL = "<script>alert(1)</script>"


def write_cohort(root: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    n = 240
    patients = np.repeat(np.arange(n // 2), 2)
    y = (rng.random(n // 2) < 0.35).astype(int)[patients]
    split = np.array(["train", "val", "test", "external"])[rng.choice(4, n // 2, p=[0.5, 0.15, 0.2, 0.15])][patients]
    center = np.where(split == "external", EVIL, rng.choice(["A", "B"], n))
    ids = [f"S{i:04d}" for i in range(n)]
    frame = pd.DataFrame({"sample_id": ids, "patient_id": [f"P{p}" for p in patients], "center": center})
    root.mkdir(parents=True, exist_ok=True)
    frame.assign(split=split, fold=-1).to_csv(root / "splits.csv", index=False)
    frame.assign(lnm=y).to_csv(root / "manifest.csv", index=False)
    (root / "cohort.json").write_text(json.dumps({"source": "demo", "grouping": "patient", "warnings": []}))
    pd.DataFrame({"file": [f"img/{EVIL}.png"], "sample_id": ["S9999"], "reason": [f"cannot decode {EVIL}"]}).to_csv(
        root / "us.problems.csv", index=False)
    paths = {"splits": root / "splits.csv", "manifest": root / "manifest.csv", "cohort": root / "cohort.json",
             "problems": root / "us.problems.csv"}
    for name, strength in (("good", 2.0), ("weak", 0.7)):
        score = strength * y + rng.normal(size=n)
        prob = 1 / (1 + np.exp(-(score - strength / 2)))
        model_dir = root / name
        model_dir.mkdir()
        frame.assign(split=split, task="lnm", y_true=y.astype(float), y_prob=prob).to_csv(
            model_dir / "predictions.csv", index=False)
        evaluate_model(model_dir / "predictions.csv", model_dir / "metrics.json", n_boot=200, seed=0)
        paths[name] = model_dir
    return paths


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("report")
    paths = write_cohort(root)
    history = root / "history.csv"
    pd.DataFrame({"epoch": range(5), "train_loss": np.linspace(1, 0.5, 5), "val_loss": np.linspace(1.1, 0.7, 5),
                  "val_auc": np.linspace(0.6, 0.8, 5), "seconds": 1.0}).to_csv(history, index=False)
    study = {"description": f"test study {EVIL}", "labels": ["lnm"],
             "modalities": {"us": {"kind": "image", "size": [64, 64]}},
             "split": {"seed": 1, "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "stratify": "lnm",
                       "external_centers": [EVIL], "folds": 0}}
    out = root / "good_report.html"
    build_head_report(
        out, study_name="clnm", study=study, config={"studies": {"clnm": study}}, name="good", kind="stage1",
        spec={"modality": "us", "model": "resnet18", "train": {"epochs": 5}},
        predictions=paths["good"] / "predictions.csv", metrics=paths["good"] / "metrics.json",
        splits=paths["splits"], manifest=paths["manifest"], label="lnm", cohort_info=paths["cohort"],
        problems=[paths["problems"]], history=history, references={"weak": paths["weak"] / "predictions.csv"},
        n_boot=200,
    )
    build_study_report(
        root / "report.html", study_name="clnm", study=study, config={}, label="lnm",
        models={n: ("stage1", paths[n] / "metrics.json", paths[n] / "predictions.csv") for n in ("good", "weak")},
        splits=paths["splits"], manifest=paths["manifest"], cohort_info=paths["cohort"], problems=[paths["problems"]],
    )
    return out, paths


def test_report_is_self_contained_and_escapes_data_text(report: tuple[Path, dict[str, Path]]) -> None:
    html = report[0].read_text()
    assert EVIL not in html and "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text: centre, problem file, reason
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from a network
    assert "@import" not in html and "url(http" not in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    for section in ("Cohort and participant flow", "Split method", "Model and training", "Performance",
                    "Per-centre performance", "Comparisons", "Provenance", "Samples left out"):
        assert section in html


def test_report_numbers_come_from_the_metrics(report: tuple[Path, dict[str, Path]]) -> None:
    out, paths = report
    metrics = json.loads((paths["good"] / "metrics.json").read_text())
    test = metrics["tasks"]["lnm"]["splits"]["test"]
    html = out.read_text()
    assert f"{test['auroc']['value']:.3f}" in html
    low, high = test["auroc"]["delong_ci"]
    assert f"({low:.3f}–{high:.3f})" in html
    assert "weak" in html and "DeLong p" in html  # the comparison against the reference model


def test_study_overview_links_every_model(report: tuple[Path, dict[str, Path]]) -> None:
    html = (report[0].parent / "report.html").read_text()
    assert 'href="./good_report.html"' in html and 'href="./weak_report.html"' in html
    assert EVIL not in html


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (make test installs it from Debian where it can)")
def test_report_renders_in_headless_chromium(report: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    requests: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, java_script_enabled=True)
        page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report[0].as_uri())
        page.wait_for_load_state("load")
        roc = page.locator("img[alt^='ROC curves']").first
        roc.scroll_into_view_if_needed()
        assert roc.is_visible()
        size = roc.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight, img.clientWidth]")
        assert size[0] and size[1] > 200 and size[2] > 200 and size[3] > 200  # decoded and laid out
        shot = tmp_path / "roc.png"
        roc.screenshot(path=str(shot))
        table = page.locator("table:has(th:text('AUROC'))").first
        table.scroll_into_view_if_needed()
        assert table.is_visible()
        box = table.bounding_box()
        assert box is not None and box["width"] > 400 and box["height"] > 40
        assert "test" in table.inner_text()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert problems == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    import cv2

    pixels = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert pixels is not None and pixels.std() > 20  # a drawn figure, not a blank box


def test_grad_cam_points_at_the_evidence() -> None:
    import torch
    from torch import nn

    from medflow.models.classifier import Classifier
    from medflow.report.gradcam import grad_cam

    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 0.1)
    encoder = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    model = Classifier(encoder, 4)
    nn.init.constant_(model.head[1].weight, 1.0)
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 2:6, 3:7] = 1.0  # the only evidence of sample 0: top left
    x[1, 0, 10:14, 9:13] = 1.0  # of sample 1: bottom right
    cams = grad_cam(model, x)
    assert cams.shape == (2, 16, 16) and cams.min() >= 0.0 and cams.max() <= 1.0
    assert np.unravel_index(cams[0].argmax(), cams[0].shape)[0] < 8
    assert np.unravel_index(cams[1].argmax(), cams[1].shape)[0] >= 8
    assert cams[0][2:6, 3:7].mean() > 3 * cams[0][10:, 10:].mean()


def test_slice_scores_become_an_image_level_task_clustered_by_study(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    studies = pd.DataFrame({"sample_id": [f"T{i}" for i in range(40)], "patient_id": [f"P{i}" for i in range(40)],
                            "center": "A", "split": np.repeat(["train", "val", "test", "test"], 10), "task": "pe"})
    y = np.tile([0, 1], 20)
    studies = studies.assign(y_true=y.astype(float), y_prob=np.clip(0.3 + 0.4 * y + rng.normal(0, 0.1, 40), 0, 1))
    studies.to_csv(tmp_path / "predictions.csv", index=False)
    slices = pd.DataFrame([
        {"sample_id": sid, "slice": k, "task": "pe_present_on_image", "y_true": float(label and k % 2),
         "y_prob": float(0.2 + 0.6 * (label and k % 2) + rng.normal(0, 0.05))}
        for sid, label in zip(studies.sample_id, y, strict=True) for k in range(5)
    ])
    slices.to_csv(tmp_path / "slice_predictions.csv", index=False)
    evaluate_model(tmp_path / "predictions.csv", tmp_path / "metrics.json", n_boot=100)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    image = metrics["tasks"]["pe_present_on_image"]["splits"]["test"]
    assert image["n"] == 100 and image["n_patients"] == 20  # slices of the 20 test studies, clustered by patient
    assert image["auroc"]["value"] > 0.95
    assert set(metrics["thresholds"]) == {"pe", "pe_present_on_image"}


def test_a_registered_metric_reaches_metrics_json_and_both_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report metric is one registry entry: evaluation stores it, the model page shows its column
    and the study page its overview splits."""
    from medflow.evaluate import registry

    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy())
    registry.register_metric(registry.ReportMetric(
        "mean_score", lambda split: {"value": float(split.p.mean()) if split.y.size else None},
        (registry.Column("mean score", "mean_score.value", overview=("test",)),)))
    paths = write_cohort(tmp_path / "c")
    metrics = json.loads((paths["good"] / "metrics.json").read_text())
    value = metrics["tasks"]["lnm"]["splits"]["test"]["mean_score"]["value"]
    predictions = pd.read_csv(paths["good"] / "predictions.csv")
    assert value == pytest.approx(predictions.y_prob[predictions.split == "test"].mean())
    study = {"labels": ["lnm"], "modalities": {}, "split": {"seed": 1, "fractions": {"train": 1.0}, "folds": 0}}
    page = build_head_report(
        tmp_path / "good_report.html", study_name="s", study=study, config={}, name="good", kind="stage1",
        spec={"modality": "us", "model": "resnet18"}, predictions=paths["good"] / "predictions.csv",
        metrics=paths["good"] / "metrics.json", splits=paths["splits"], manifest=paths["manifest"], label="lnm",
        n_boot=20,
    ).read_text()
    overview = build_study_report(
        tmp_path / "report.html", study_name="s", study=study, config={}, label="lnm",
        models={"good": ("stage1", paths["good"] / "metrics.json", paths["good"] / "predictions.csv")},
        splits=paths["splits"], manifest=paths["manifest"],
    ).read_text()
    assert "<th>mean score</th>" in page and f"<td>{value:.3f}</td>" in page
    assert "<th>test mean score</th>" in overview and f"<td>{value:.3f}</td>" in overview
