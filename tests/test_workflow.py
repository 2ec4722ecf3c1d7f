"""The Snakemake workflow end to end on small demo cohorts: DAG, config errors, ingest + splits, no PHI."""

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pydicom
import pytest
import yaml

REPO = Path(__file__).parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
STUDIES = ("clnm", "brainmets", "lnmc", "pe", "ehr")
# Small enough for CI's 2 cores, big enough for every split to get both classes.
SMALL = {
    "clnm": {"patients": 60, "image_size": 32},
    "brainmets": {"patients": 30, "image_size": 32},
    "lnmc": {"patients": 120, "image_size": 32},
    "pe": {"patients": 20, "image_size": 32},
    "ehr": {"patients": 50, "image_size": 32},
}
# The demo's evaluation-heavy fractions (test splits of 300+) leave too few training patients at
# these sizes: the small copies train on most of their patients.
SMALL_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def make_workdir(tmp: Path, edit=None) -> Path:
    for item in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / item)
    config = yaml.safe_load((tmp / "config/config.yaml").read_text())
    for study, sizes in SMALL.items():
        config["studies"][study]["cohort"].update(sizes)
        split = config["studies"][study]["split"]
        split["fractions"] = dict(SMALL_FRACTIONS, val=0.0, test=0.3) if split.get("folds") else SMALL_FRACTIONS
        for spec in config["studies"][study]["modalities"].values():
            if "size" in spec:
                spec["size"] = [min(s, 32) for s in spec["size"]]
    if edit:
        edit(config)
    (tmp / "config/config.yaml").write_text(yaml.safe_dump(config))
    return tmp


def fake_phi(resources: Path) -> set[bytes]:
    values = set()
    for path in resources.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for tag in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName"):
            value = str(ds.get(tag, "")).strip()
            if len(value) >= 6:  # shorter strings match pixel bytes by chance
                values.add(value.encode())
    return values


def snakemake(workdir: Path, *args: str, check: bool = True, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, timeout=1200, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def test_dry_run_lists_ingest_and_split_jobs_of_all_studies(tmp_path):
    workdir = make_workdir(tmp_path)
    out = snakemake(workdir, "-n", "--quiet", "rules").stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if len(line.split()) == 2
              and line.split()[1].isdigit()}
    assert counts["demo_cohort"] == 5
    assert counts["validate_manifest"] == 5
    assert counts["split"] == 5
    assert counts["ingest_images"] == 6  # tumour_us, fat_ct, mri, ct_patch, ct_series, cxr
    assert counts["ingest_tables"] == 3  # clinical, ehr, notes


def test_config_error_stops_at_start_naming_the_key(tmp_path):
    workdir = make_workdir(tmp_path, lambda c: c["studies"]["pe"]["split"].update(stratfy="pe"))
    proc = snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "studies.pe.split: unknown key(s) 'stratfy'" in text
    assert "allowed keys: external_centers, folds, fractions, seed, stratify" in text


def test_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_all_studies_ingest_and_split_on_demo_cohorts(tmp_path):
    workdir = make_workdir(tmp_path)
    targets = [f"results/{s}/splits.csv" for s in STUDIES]
    snakemake(workdir, "--cores", "2", *targets)
    snakemake(workdir, "--cores", "2", "--until", "ingest_images", "ingest_tables")  # every ingest output

    for study in STUDIES:
        manifest = pd.read_csv(workdir / f"results/{study}/manifest.csv", dtype=str)
        splits = pd.read_csv(workdir / f"results/{study}/splits.csv", dtype=str)
        assert set(splits["sample_id"]) == set(manifest["sample_id"])
        assert (splits.groupby("patient_id")["split"].nunique() == 1).all(), study
    clnm = pd.read_csv(workdir / "results/clnm/splits.csv")
    assert set(clnm.loc[clnm["center"] == "C", "split"]) == {"external"}
    brainmets = pd.read_csv(workdir / "results/brainmets/splits.csv")
    assert set(brainmets.loc[brainmets["split"] == "train", "fold"]) == {0, 1, 2, 3, 4}

    with h5py.File(workdir / "results/pe/ingest/ct_series.h5") as h5:
        n = len(h5["sample_id"])
        assert h5["offsets"].shape == (n + 1,)
        assert h5["images"].shape[0] == h5["offsets"][-1] == h5["slice_label"].shape[0]
        assert h5["images"].chunks == (1, *h5["images"].shape[1:])
        assert h5["images"].compression is not None

    # The fake PHI the demo wrote into DICOM headers must not reach any output.
    phi = fake_phi(workdir / "resources")
    assert len(phi) > 10
    for path in (workdir / "results").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            leaked = [p for p in phi if p in blob]
            assert not leaked, f"{path} contains {leaked}"

    # Nothing is stale: a second run has nothing to do.
    proc = snakemake(workdir, "--cores", "2", "-n", "--until", "ingest_images", "ingest_tables", "split")
    assert job_counts(proc.stdout) == {}


@pytest.mark.slow
def test_public_layouts_with_broken_files_are_imported_ingested_and_split(tmp_path):
    """LUNA16 patch file and RSNA-PE folders (not demo sources) through the import rule, with the kinds
    of damage real downloads have: a truncated slice, a deleted slice and a non-DICOM file."""
    from medflow.cohort.demo import generate_demo_cohort

    public = tmp_path / "public"
    generate_demo_cohort("lnmc", public / "luna", patients=80, image_size=32, seed=1)
    generate_demo_cohort("pe", public / "rsna", patients=16, image_size=32, seed=2)
    studies = sorted(p for p in (public / "rsna/train").iterdir())
    truncated, deleted, junk = (sorted(next(s.iterdir()).iterdir()) for s in studies[:3])
    truncated[3].write_bytes(truncated[3].read_bytes()[:2000])
    deleted[4].unlink()
    junk[2].write_text("this is not a DICOM file\n")
    broken = {s.name for s in studies[:3]}

    def edit(config):
        config["studies"] = {name: config["studies"][name] for name in ("lnmc", "pe")}
        config["studies"]["lnmc"]["cohort"] = {"source": "luna-patches", "path": str(public / "luna/all_patches.hdf5")}
        config["studies"]["pe"]["cohort"] = {"source": "rsna-pe", "path": str(public / "rsna")}

    (tmp_path / "work").mkdir()
    workdir = make_workdir(tmp_path / "work", edit)
    until = ("--until", "ingest_images", "split")
    snakemake(workdir, "--cores", "2", *until)

    lnmc = pd.read_csv(workdir / "results/lnmc/manifest.csv")
    assert len(lnmc) == 80 and set(lnmc["center"]) == {"luna16"}
    info = yaml.safe_load((workdir / "results/lnmc/cohort.json").read_text())
    assert info["grouping"] == "none"
    assert any("no patient or nodule ids" in w for w in info["warnings"])
    with h5py.File(workdir / "results/lnmc/ingest/ct_patch.h5") as h5:
        assert list(h5["sample_id"].asstr()[:]) == lnmc["sample_id"].tolist()

    manifest = pd.read_csv(workdir / "results/pe/manifest.csv")
    assert len(manifest) == 16  # the importer keeps a study with a missing file; ingest rejects it
    problems = pd.read_csv(workdir / "results/pe/ingest/ct_series.problems.csv")
    assert set(problems["sample_id"]) == broken
    reasons = " ".join(problems["reason"])
    assert "truncated" in reasons and "not a DICOM file" in reasons and "missing or misplaced slices" in reasons
    # each row names its input by the manifest cell, and its reason names no path (README, Privacy)
    assert set(problems["file"]) <= set(manifest["ct_series"])
    assert not problems["reason"].str.contains(str(public)).any()
    assert problems["reason"].str.contains("of the series folder").any()  # a bad slice, by its position
    with h5py.File(workdir / "results/pe/ingest/ct_series.h5") as h5:
        ingested = set(h5["sample_id"].asstr()[:])
        labelled = int((h5["slice_label"][:] >= 0).sum())
        assert labelled == h5["offsets"][-1]  # every ingested slice found its label by SOP UID
    assert ingested == set(manifest["sample_id"]) - broken
    splits = pd.read_csv(workdir / "results/pe/splits.csv")
    assert set(splits["sample_id"]) == set(manifest["sample_id"])
    log = (workdir / "logs/pe/ingest_ct_series.log").read_text()
    assert all(name in log for name in broken)
    proc = snakemake(workdir, "--cores", "2", "-n", *until)
    assert job_counts(proc.stdout) == {}


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count} (without the 'all' and 'total' rows);
    {} when nothing is to be done."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] not in ("all", "total"):
            counts[parts[0]] = int(parts[1])
    return counts


def tiny_stage1(config):
    """One small study: LUNA-like patches, a ConvNet with contrastive pre-training, one epoch each."""
    study = config["studies"]["lnmc"]
    study["cohort"].update(patients=80, image_size=32)
    study["modalities"]["ct_patch"]["size"] = [32, 32]
    study["stage1"] = {
        "ct_patch-convnet": {
            "modality": "ct_patch", "model": "convnet", "pretrain": "simclr", "augment": {"hflip": 0.5, "noise": 0.1},
            "gpus": 2,  # data-parallel: two gloo ranks under torchrun on this CPU machine
            "pretrain_train": {"epochs": 1, "batch_size": 16, "workers": 0},
            "train": {"epochs": 2, "batch_size": 16, "workers": 0, "lr": 0.003},
        }
    }
    study["stage2"] = {
        "logreg": {"type": "logreg", "inputs": ["ct_patch-convnet"], "cv_folds": 2},
        "rf": {"type": "rf", "inputs": ["ct_patch-convnet"], "cv_folds": 2, "grid": {"max_depth": [2]}},
    }
    config["studies"] = {"lnmc": study}


@pytest.mark.slow
def test_stage1_reruns_follow_the_config_change(tmp_path):
    workdir = make_workdir(tmp_path, tiny_stage1)
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1")
    model_dir = workdir / "results/lnmc/stage1/ct_patch-convnet"
    assert (model_dir / "pretrain/model.pt").is_file() and (model_dir / "predictions.csv").is_file()
    assert (workdir / "results/lnmc/features/ct_patch-convnet.h5").is_file()
    for job in ("pretrain", "train"):  # both ranks trained, under torchrun, and logged to the rule's log
        log = (workdir / f"logs/lnmc/{job}_ct_patch-convnet.log").read_text()
        assert "rank 0 " in log and "rank 1 " in log, log[-3000:]
    proc = snakemake(workdir, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr

    for head in ("logreg", "rf"):
        frame = pd.read_csv(workdir / f"results/lnmc/stage2/{head}/predictions.csv")
        assert set(frame.split) >= {"train", "val", "test"} and frame.y_prob.between(0, 1).all()
        html = (workdir / f"results/lnmc/{head}_report.html").read_text()
        assert "Grouping by patient was impossible" in html  # the patch file has no patient ids

    def edit(path, change, part="stage1", name="ct_patch-convnet"):
        config = yaml.safe_load(path.read_text())
        change(config["studies"]["lnmc"][part][name])
        path.write_text(yaml.safe_dump(config))

    config_path = workdir / "config/config.yaml"
    original = config_path.read_text()
    # the classifier's learning rate: stage B and what reads it, not the contrastive pre-training
    edit(config_path, lambda m: m["train"].update(lr=0.001))
    reports = {"evaluate": 3, "report": 3, "study_report": 1}  # the network, both heads, the overview
    assert job_counts(snakemake(workdir, "-n").stdout) == {"train_stage1": 1, "features": 1, "stage2": 2, **reports}
    # the pre-training: everything of that model
    config_path.write_text(original)
    edit(config_path, lambda m: m["pretrain_train"].update(epochs=2))
    assert job_counts(snakemake(workdir, "-n").stdout) == {
        "pretrain_stage1": 1, "train_stage1": 1, "features": 1, "stage2": 2, **reports}
    # one head's settings: that head only
    config_path.write_text(original)
    edit(config_path, lambda m: m.update(grid={"C": [0.5]}), "stage2", "logreg")
    proc = snakemake(workdir, "-n")
    assert job_counts(proc.stdout) == {"stage2": 1, "evaluate": 1, "report": 1, "study_report": 1}
    assert "results/lnmc/stage2/logreg/" in proc.stdout and "results/lnmc/logreg_report.html" in proc.stdout
    outputs = [line for line in proc.stdout.splitlines() if line.strip().startswith("output:")]
    assert not [line for line in outputs if "lnmc/rf" in line or "lnmc/stage2/rf" in line]
    # back to the original: the outputs are current again
    config_path.write_text(original)
    proc = snakemake(workdir, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr

    # the partial-rerun recipes of the README, by their exact job lists
    study = ("--", "results/lnmc/report.html")  # one study: the overview depends on every page of it
    downstream = {"features": 1, "stage2": 2, **reports}
    assert job_counts(snakemake(workdir, "-n", "--forcerun", "train_stage1", *study).stdout) == {
        "train_stage1": 1, **downstream}
    assert job_counts(snakemake(workdir, "-n", "--forcerun", "train_stage1", "--until", "train_stage1",
                                *study).stdout) == {"train_stage1": 1}
    assert job_counts(snakemake(workdir, "-n", "--forcerun", "pretrain_stage1", *study).stdout) == {
        "pretrain_stage1": 1, "train_stage1": 1, **downstream}
    assert job_counts(snakemake(workdir, "-n", "--forcerun", "stage2", "--",
                                "results/lnmc/rf_report.html").stdout) == {"stage2": 1, "evaluate": 1, "report": 1}
    # re-evaluate without retraining: forced, or because an evaluation setting changed
    assert job_counts(snakemake(workdir, "-n", "--forcerun", "evaluate", *study).stdout) == reports
    config = yaml.safe_load(original)
    config["evaluation"]["bootstrap"] = 200
    config_path.write_text(yaml.safe_dump(config))
    assert job_counts(snakemake(workdir, "-n").stdout) == reports
    config_path.write_text(original)


def folds_with_supcon(config):
    """clnm cross-validated in 3 folds, one SupCon-pre-trained network, no heads."""
    study = config["studies"]["clnm"]
    study["split"].update(folds=3, fractions={"train": 0.8, "val": 0.0, "test": 0.2})
    model = {**study["stage1"]["tumour_us-sclresnet101"], "pretrain": "supcon"}
    study["stage1"], study["stage2"] = {"tumour_us-sclresnet101": model}, {}
    config["studies"] = {"clnm": study}


def planned_jobs(output: str) -> list[dict[str, str]]:
    """The jobs of a dry run's output: rule, input and output lines of each."""
    jobs: list[dict[str, str]] = []
    for line in output.splitlines():
        if line.startswith("rule ") and line.rstrip().endswith(":"):
            jobs.append({"rule": line[5:].strip().rstrip(":")})
        elif jobs and line.strip().startswith(("input:", "output:")):
            key, _, value = line.strip().partition(": ")
            jobs[-1][key.rstrip(":")] = value
    return jobs


def pretend_run(workdir: Path, target: str) -> None:
    """Mark every job behind ``target`` as done, without running it: empty output files, then every
    job forced through ``--touch`` (in job order, recording each job's params as a real run does)."""
    for job in planned_jobs(snakemake(workdir, "-n", target).stdout):
        for path in job.get("output", "").split(", "):
            (workdir / path).parent.mkdir(parents=True, exist_ok=True)
            (workdir / path).touch()
    snakemake(workdir, "--cores", "1", "--touch", "--forceall", target)


def test_folds_pretrain_each_fold_without_its_own_samples(tmp_path):
    """With folds, fold k's encoder is pre-trained for fold k alone (on the training folds ≠ k, see
    stage1.partition): one pretrain job per fold, each fold's training reading its own encoder, and a
    pre-training setting reruns exactly the folds' pre-training and training."""
    workdir = make_workdir(tmp_path, folds_with_supcon)
    base = "results/clnm/stage1/tumour_us-sclresnet101"
    target = f"{base}/predictions.csv"
    proc = snakemake(workdir, "-n", target)
    counts = job_counts(proc.stdout)
    stage1_rules = ("pretrain_stage1", "pretrain_fold", "train_fold")
    assert {r: counts.get(r) for r in stage1_rules} == {"pretrain_stage1": None, "pretrain_fold": 3, "train_fold": 3}
    jobs = planned_jobs(proc.stdout)
    pretrained = sorted(j["output"].split(", ")[0] for j in jobs if j["rule"] == "pretrain_fold")
    assert pretrained == [f"{base}/fold{k}/pretrain/model.pt" for k in range(3)]
    for job in (j for j in jobs if j["rule"] == "train_fold"):
        fold = job["output"].split(f"{base}/")[1].split("/")[0]
        encoders = [p for p in job["input"].split(", ") if p.endswith("pretrain/model.pt")]
        assert encoders == [f"{base}/{fold}/pretrain/model.pt"], job

    pretend_run(workdir, target)
    config_path = workdir / "config/config.yaml"
    original = yaml.safe_load(config_path.read_text())
    for part, changed in (("pretrain_train", {"pretrain_fold": 3, "train_fold": 3, "fold_ensemble": 1}),
                          ("train", {"train_fold": 3, "fold_ensemble": 1})):
        config = yaml.safe_load(yaml.safe_dump(original))
        config["studies"]["clnm"]["stage1"]["tumour_us-sclresnet101"][part]["epochs"] = 7
        config_path.write_text(yaml.safe_dump(config))
        assert job_counts(snakemake(workdir, "-n", target).stdout) == changed, part


@pytest.mark.slow
def test_added_patients_rerun_the_cohort_stages_and_convert_only_the_new_images(tmp_path):
    """A user appends rows to their manifest: the manifest check, the ingests and the split rerun,
    and each image ingest decodes only the new samples."""
    from medflow.cohort.demo import generate_demo_cohort

    cohort = tmp_path / "cohort"
    generate_demo_cohort("clnm", cohort, patients=40, image_size=32, seed=3)
    full = pd.read_csv(cohort / "manifest.csv", dtype=str)
    first = full.iloc[:32]
    first.to_csv(cohort / "manifest.csv", index=False)

    def edit(config):
        study = config["studies"]["clnm"]
        study["cohort"] = {"source": "manifest", "path": str(cohort / "manifest.csv")}
        config["studies"] = {"clnm": study}

    (tmp_path / "work").mkdir()
    workdir = make_workdir(tmp_path / "work", edit)
    until = ("--until", "ingest_images", "ingest_tables", "split")
    snakemake(workdir, "--cores", "2", *until)
    full.to_csv(cohort / "manifest.csv", index=False)
    proc = snakemake(workdir, "-n", *until)
    assert job_counts(proc.stdout) == {"validate_manifest": 1, "ingest_images": 2, "ingest_tables": 1, "split": 1}
    snakemake(workdir, "--cores", "2", *until)
    for modality in ("tumour_us", "fat_ct"):
        log = (workdir / f"logs/clnm/ingest_{modality}.log").read_text()
        assert "40 ingested (32 reused from the previous ingest, 8 converted)" in log, log[-2000:]
        with h5py.File(workdir / f"results/clnm/ingest/{modality}.h5") as h5:
            assert sorted(h5["sample_id"].asstr()[:]) == sorted(full["sample_id"])
    splits = pd.read_csv(workdir / "results/clnm/splits.csv")
    assert set(splits["sample_id"]) == set(full["sample_id"])
