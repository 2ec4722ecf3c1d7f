"""The workflow's output layout, targets and input functions (medflow.workflow), without Snakemake."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from medflow.config import check_config
from medflow.workflow.layout import Layout
from medflow.workflow.plan import Plan, memory_mb, names_regex

REPO = Path(__file__).parents[1]
LAYOUT = Layout()
FULL = yaml.safe_load((REPO / "config/config.yaml").read_text())
TINY = yaml.safe_load((REPO / "tests/cluster/tiny.yaml").read_text())
MODEL = "ct_patch-convnet"  # tiny.yaml's network

# Every output the README documents, as the layout writes it.
DOCUMENTED = {
    "results/{study}/manifest.csv": LAYOUT.manifest("{study}"),
    "results/{study}/ingest/{modality}.h5": LAYOUT.ingest("{study}", "{modality}", "image"),
    "results/{study}/ingest/{modality}.parquet": LAYOUT.ingest("{study}", "{modality}", "table"),
    "results/{study}/ingest/{modality}.problems.csv": LAYOUT.problems("{study}", "{modality}"),
    "results/{study}/splits.csv": LAYOUT.splits("{study}"),
    "results/{study}/stage1/{model}/model.pt": LAYOUT.stage1_model("{study}", "{model}"),
    "results/{study}/stage1/{model}/history.csv": LAYOUT.stage1_history("{study}", "{model}"),
    "results/{study}/stage1/{model}/predictions.csv": LAYOUT.predictions("{study}", "stage1", "{model}"),
    "results/{study}/stage1/{model}/pretrain/": LAYOUT.model_dir("{study}", "stage1", "{model}", pretrain=True) + "/",
    "results/{study}/stage1/{model}/fold{k}/": LAYOUT.model_dir("{study}", "stage1", "{model}", "{k}") + "/",
    "results/{study}/features/{model}.h5": LAYOUT.features("{study}", "{model}"),
    "results/{study}/features/{encoder}.h5": LAYOUT.features("{study}", "{encoder}"),
    "results/{study}/features/{model}.csv": LAYOUT.features_csv("{study}", "{model}"),
    "results/{study}/stage2/{head}/predictions.csv": LAYOUT.predictions("{study}", "stage2", "{head}"),
    "results/{study}/stage2/{head}/head.json": LAYOUT.head_file("{study}", "{head}", "head.json"),
    "results/{study}/stage2/{head}/excluded.csv": LAYOUT.head_file("{study}", "{head}", "excluded.csv"),
    "results/{study}/{model}_report.html": LAYOUT.model_report("{study}", "{model}"),
    "results/{study}/report.html": LAYOUT.study_report("{study}"),
    "resources/demo/{study}/oracle.json": LAYOUT.oracle("{study}"),
}


def plan(config: dict, edit=None, request_gpus: bool = False) -> Plan:
    config = copy.deepcopy(config)
    if edit:
        edit(config)
    return Plan(check_config(config), request_gpus=request_gpus)


def wildcards(**values: str) -> SimpleNamespace:
    return SimpleNamespace(**values)


def with_folds(config: dict) -> None:
    """tiny.yaml's study cross-validated in 3 folds, its network SimCLR-pre-trained, no heads."""
    study = config["studies"]["lnmc"]
    study["split"].update(folds=3, fractions={"train": 0.8, "val": 0.0, "test": 0.2})
    study["stage1"][MODEL]["pretrain"] = "simclr"
    study["stage2"] = {}


def test_the_readme_documents_the_layouts_paths():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `((?:results|resources)/[^`]*)`", readme, flags=re.M)
    mentioned = set(re.findall(r"`((?:results|resources)/[^`]*)`", readme))
    assert len(table) >= 15 and set(table) <= set(DOCUMENTED)
    assert set(DOCUMENTED) <= mentioned
    for documented, path in DOCUMENTED.items():
        assert path == documented


def test_roots_come_from_the_config():
    layout = plan(TINY, lambda c: c.update(results="out", resources="cache")).layout
    assert layout.splits("lnmc") == "out/lnmc/splits.csv"
    assert layout.manifest("lnmc", "imported") == "cache/imported/lnmc/manifest.csv"
    assert layout.log("lnmc", "split") == "logs/lnmc/split.log"
    with pytest.raises(ValueError, match="cohort origin 'downloaded'"):
        layout.manifest("lnmc", "downloaded")


def every_path(p: Plan) -> dict[str, tuple]:
    """Every file the layout names for the config, by path → (method, arguments)."""
    layout, out = p.layout, {}

    def add(method: str, *args) -> None:
        path = getattr(layout, method)(*args)
        assert out.setdefault(path, (method, *args)) == (method, *args), f"{path}: {out[path]} and {(method, *args)}"

    for study, spec in p.studies.items():
        for origin in ("checked", "demo", "imported"):
            add("manifest", study, origin)
            add("cohort_info", study, origin)
        add("oracle", study)
        add("splits", study)
        add("study_report", study)
        for modality, mod in spec["modalities"].items():
            add("ingest", study, modality, mod["kind"])
            add("problems", study, modality)
        folds = [None, *range(spec["split"]["folds"])]
        for model in spec["stage1"]:
            for fold in folds:
                add("predictions", study, "stage1", model, fold)
                for pretrain in (False, True):
                    add("stage1_model", study, model, fold, pretrain)
                    add("stage1_history", study, model, fold, pretrain)
        for name in [*spec["stage1"], *spec.get("encoders", {})]:
            add("features", study, name)
        for head in p.heads[study]:
            add("predictions", study, "stage2", head)
            for file in ("head.json", "excluded.csv", "embeddings.h5", "slice_predictions.csv"):
                add("head_file", study, head, file)
        for name, stage in p.models[study].items():
            add("metrics", study, stage, name)
            add("model_report", study, name)
    return out


@pytest.mark.parametrize("edit", [None, with_folds], ids=["full", "tiny-folds"])
def test_no_two_files_share_a_path(edit):
    """Each contract file of every study, model, fold and head has a path of its own (every_path
    fails on a repeat), and every target of `rule all` is one of them."""
    p = plan(FULL) if edit is None else plan(TINY, edit)
    paths = every_path(p)
    targets = p.all_targets()
    assert len(targets) == len(set(targets)) and set(targets) <= set(paths)


def test_rules_sharing_an_output_template_are_told_apart_by_the_names():
    """train_stage1 and fold_ensemble both write stage1/{model}/predictions.csv, stage2 and
    stage2_unimodal stage2/{head}/..., features and encode features/{name}.h5: the names each
    rule accepts must not overlap, or Snakemake could not choose."""
    p = plan(FULL)
    assert p.stage1_models(folds=True) == ["mri-seresnext50"]
    assert not set(p.stage1_models(folds=True)) & set(p.stage1_models(folds=False))
    unimodal, other = p.stage2_heads(unimodal=True), p.stage2_heads(unimodal=False)
    assert unimodal and other and not set(unimodal) & set(other)
    encoders = {e for s in p.studies.values() for e in s.get("encoders", {})}
    assert encoders and not encoders & set(p.stage1_models(True) + p.stage1_models(False))


def test_targets_of_a_study_in_order():
    p = plan(TINY)
    assert p.study_targets("lnmc") == [
        "results/lnmc/ingest/ct_patch.h5",
        "results/lnmc/ingest/ct_patch.problems.csv",
        "results/lnmc/splits.csv",
        f"results/lnmc/stage1/{MODEL}/predictions.csv",
        f"results/lnmc/features/{MODEL}.h5",
        "results/lnmc/stage2/logreg/predictions.csv",
        f"results/lnmc/{MODEL}_report.html",
        "results/lnmc/logreg_report.html",
        "results/lnmc/report.html",
    ]
    assert p.all_targets() == p.study_targets("lnmc")
    full = plan(FULL)
    assert "results/clnm/dsaf3_report.html" in full.all_targets()  # the README's mission target
    assert not [t for t in full.all_targets() if "{" in t]


def test_input_functions_of_a_folds_study_point_at_the_folds():
    p = plan(TINY, with_folds)
    base = f"results/lnmc/stage1/{MODEL}"
    assert p.fold_predictions(wildcards(study="lnmc", model=MODEL)) == [
        f"{base}/fold{k}/predictions.csv" for k in range(3)
    ]
    assert p.stage1_encoder(wildcards(study="lnmc", model=MODEL, fold="1")) == f"{base}/fold1/pretrain/model.pt"
    assert p.stage1_models(folds=True) == [MODEL] and p.stage1_models(folds=False) == []
    targets = p.study_targets("lnmc")
    assert f"{base}/predictions.csv" in targets and not [t for t in targets if "/features/" in t]
    report = p.report_inputs(wildcards(study="lnmc", name=MODEL))
    assert report["model"] == f"{base}/fold0/model.pt" and report["history"] == []
    assert report["ingest"] == "results/lnmc/ingest/ct_patch.h5"


def test_input_functions_of_a_study_without_folds():
    p = plan(TINY, lambda c: c["studies"]["lnmc"]["stage1"][MODEL].update(pretrain="simclr", gpus=2))
    wc = wildcards(study="lnmc", model=MODEL)
    base = f"results/lnmc/stage1/{MODEL}"
    assert p.stage1_inputs(wc) == {
        "data": "results/lnmc/ingest/ct_patch.h5",
        "splits": "results/lnmc/splits.csv",
        "manifest": "results/lnmc/manifest.csv",
    }
    assert p.stage1_encoder(wc) == f"{base}/pretrain/model.pt"
    assert plan(TINY).stage1_encoder(wc) == []  # no pre-training: nothing to start from
    assert p.stage1_label(wc) == "malignant"
    assert (p.stage1_ranks(wc), p.stage1_gpus(wc), p.stage1_inference_gpus(wc)) == (2, 0, 0)
    gpu = plan(TINY, lambda c: c["studies"]["lnmc"]["stage1"][MODEL].update(gpus=2), request_gpus=True)
    assert (gpu.stage1_gpus(wc), gpu.stage1_inference_gpus(wc)) == (2, 1)
    report = p.report_inputs(wildcards(study="lnmc", name=MODEL))
    assert report["model"] == f"{base}/model.pt" and report["history"] == f"{base}/history.csv"
    head = p.report_inputs(wildcards(study="lnmc", name="logreg"))
    assert head["info"] == "results/lnmc/stage2/logreg/head.json"
    assert head["references"] == [f"{base}/predictions.csv"]  # the network it reads
    assert head["problems"] == ["results/lnmc/ingest/ct_patch.problems.csv"]


def test_cohort_sources_and_ingest_specs():
    def sources(config):
        study = config["studies"]["lnmc"]
        config["studies"] = {
            "own": {**study, "cohort": {"source": "manifest", "path": "/data/own/manifest.csv"}},
            "luna": {**study, "cohort": {"source": "luna-patches", "path": "/data/all_patches.hdf5"}},
            "rsna": {**study, "cohort": {"source": "rsna-pe", "path": "/data/rsna"}},
            "lnmc": study,
        }

    p = plan(TINY, sources)
    manifest = {s: p.source_manifest(wildcards(study=s)) for s in p.studies}
    assert manifest == {
        "own": "/data/own/manifest.csv",
        "luna": "resources/imported/luna/manifest.csv",
        "rsna": "resources/imported/rsna/manifest.csv",
        "lnmc": "resources/demo/lnmc/manifest.csv",
    }
    assert p.import_source(wildcards(study="luna")) == "/data/all_patches.hdf5"
    assert p.import_source(wildcards(study="rsna")) == "/data/rsna/train.csv"
    assert p.modality_spec(wildcards(study="lnmc", image_modality="ct_patch"))["kind"] == "patches"
    with pytest.raises(ValueError, match="study 'lnmc' has no modality 'cxr'; its modalities: ct_patch"):
        p.modality_spec(wildcards(study="lnmc", image_modality="cxr"))


def test_heads_read_their_inputs_by_role():
    p = plan(FULL)
    early = p.head_inputs(wildcards(study="ehr", head="ec_early_mortality"))
    assert early["features_e_unimodal_mortality"] == "results/ehr/stage2/e_unimodal_mortality/embeddings.h5"
    assert early["splits"] == "results/ehr/splits.csv" and early["manifest"] == "results/ehr/manifest.csv"
    late = p.head_files(wildcards(study="ehr", head="ec_late_mortality"))
    assert late["predictions"]["c_unimodal_mortality"] == "results/ehr/stage2/c_unimodal_mortality/predictions.csv"
    dsaf = p.head_files(wildcards(study="clnm", head="dsaf3"))
    assert dsaf["tables"] == {"clinical": "results/clnm/ingest/clinical.parquet"}
    assert dsaf["features"]["fat_ct-sclresnet101"] == "results/clnm/features/fat_ct-sclresnet101.h5"
    assert p.head_gpus(wildcards(study="clnm", head="dsaf3")) == 0  # GPU requests off
    on = plan(FULL, request_gpus=True)
    gpus = {head: on.head_gpus(wildcards(study=study, head=head))
            for study, head in (("clnm", "dsaf3"), ("clnm", "svm"), ("ehr", "ec_joint_mortality"))}
    assert gpus == {"dsaf3": 1, "svm": 0, "ec_joint_mortality": 0}  # a neural head, a classical one, `gpus: 0`
    encoder = wildcards(study="ehr", encoder=next(iter(p.studies["ehr"]["encoders"])))
    assert p.encoder_table(encoder).startswith("results/ehr/ingest/") and p.encoder_table(encoder).endswith(".parquet")


def test_evaluation_of_an_exam_head_reads_its_image_heads_slice_scores():
    p = plan(FULL)
    exam = wildcards(study="pe", stage="stage2", name="lstm_study")
    assert p.evaluate_inputs(exam) == {
        "predictions": "results/pe/stage2/lstm_study/predictions.csv",
        "info": "results/pe/stage2/lstm_study/head.json",
        "image_head": "results/pe/stage2/lstm_image/predictions.csv",  # the job that writes the slice scores
    }
    assert p.evaluate_slices(exam) == "results/pe/stage2/lstm_image/slice_predictions.csv"
    network = wildcards(study="pe", stage="stage1", name="ct_series-resnext50")
    assert p.evaluate_inputs(network) == {"predictions": "results/pe/stage1/ct_series-resnext50/predictions.csv"}
    assert p.evaluate_slices(network) is None
    assert p.model_label(wildcards(study="pe", name="lstm_study")) == p.heads["pe"]["lstm_study"]["tasks"][0]


def test_study_report_reads_every_model_and_page():
    p = plan(TINY)
    inputs = p.study_report_inputs(wildcards(study="lnmc"))
    assert inputs["metrics"] == [f"results/lnmc/stage1/{MODEL}/metrics.json", "results/lnmc/stage2/logreg/metrics.json"]
    assert inputs["pages"] == [f"results/lnmc/{MODEL}_report.html", "results/lnmc/logreg_report.html"]
    assert inputs["cohort"] == "results/lnmc/cohort.json"


def test_names_regex_allows_exactly_the_names():
    pattern = names_regex(["a.b", "c-d", "a.b"])
    assert [n for n in ("a.b", "axb", "c-d", "c", "") if re.fullmatch(pattern, n)] == ["a.b", "c-d"]
    assert not re.fullmatch(names_regex([]), "") and not re.fullmatch(names_regex([]), "x")


def test_memory_doubles_on_each_retry():
    mem_mb = memory_mb(2000)
    assert [mem_mb(None, attempt) for attempt in (1, 2, 3)] == [2000, 4000, 8000]


def test_an_importer_gets_its_cohort_settings_as_options_and_nothing_else():
    """Importer options live under cohort: (cxr_path, encoding, ...); the schema's defaults for demo
    cohorts (patients, seed, ...) and where the cohort comes from are not options."""
    def imported(config):
        config["studies"]["lnmc"]["cohort"] = {"source": "luna-patches", "path": "/data/all_patches.hdf5"}

    p = plan(TINY, imported)
    assert p.import_options(wildcards(study="lnmc")) == {}
    p.studies["lnmc"]["cohort"]["encoding"] = "gb18030"  # as a future importer's option would arrive
    assert p.import_options(wildcards(study="lnmc")) == {"encoding": "gb18030"}
    p.studies["lnmc"]["window_hours"] = 48
    assert p.import_options(wildcards(study="lnmc")) == {"encoding": "gb18030", "window_hours": 48}


def test_training_threads_follow_the_gpus_a_job_uses():
    """On a GPU machine a training job gets threads_per_gpu per GPU (its loader workers follow them);
    without GPU requests it keeps 2, so CPU runs are scheduled as before."""
    wc = wildcards(study="lnmc", model=MODEL)
    assert plan(TINY).stage1_threads(wc) == 2
    assert plan(TINY, request_gpus=True).stage1_threads(wc) == 8

    def two_gpus(config):
        config["threads_per_gpu"] = 6
        config["studies"]["lnmc"]["stage1"][MODEL]["gpus"] = 2

    assert plan(TINY, two_gpus, request_gpus=True).stage1_threads(wc) == 12
    assert plan(TINY, two_gpus, request_gpus=True).inference_threads(wc) == 6  # inference uses one GPU
