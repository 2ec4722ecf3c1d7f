"""The training engine and the stage-1 jobs on tiny planted-signal cohorts, on the CPU."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from medflow.data import make_loader
from medflow.ingest.h5out import utf8
from medflow.io.features import read_features
from medflow.models import MODEL_NAMES, build_model
from medflow.split import make_splits
from medflow.train import folds, stage1
from medflow.train.config import TrainConfig
from medflow.train.engine import StepOutput, Trainer, bce_step

CPU = torch.device("cpu")


def write_cohort(root: Path, n: int = 60, size: int = 16, kind: str = "patches", seed: int = 0, folds: int = 0):
    """An ingest file whose positives carry a bright central square, its manifest and its splits."""
    rng = np.random.default_rng(seed)
    ids = [f"s{i:03d}" for i in range(n)]
    y = (np.arange(n) % 3 == 0).astype(int)  # prevalence 1/3
    shape = (n, size, size) if kind != "volume" else (n, 8, size, size)
    images = rng.normal(0, 1, shape).astype(np.float32)
    c = slice(size // 4, 3 * size // 4)
    images[y == 1, ..., c, c] += 1.5
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "img.h5", "w") as f:
        f.create_dataset("sample_id", data=utf8(ids))
        f.create_dataset("images", data=images, chunks=(1, *shape[1:]))
        f.attrs["kind"], f.attrs["units"], f.attrs["channels"] = kind, "raw", 1
        f.attrs["source_hash"] = "test"
    manifest = pd.DataFrame({"sample_id": ids, "patient_id": [f"p{i // 2}" for i in range(n)], "center": "A", "y": y})
    manifest.to_csv(root / "manifest.csv", index=False)
    fractions = {"train": 0.8, "val": 0.0, "test": 0.2} if folds else {"train": 0.6, "val": 0.2, "test": 0.2}
    splits = make_splits(manifest, label="y", fractions=fractions, seed=1, folds=folds)
    splits.to_csv(root / "splits.csv", index=False)
    return root


def spec(model="convnet", **train):
    cfg = {"epochs": 4, "batch_size": 8, "lr": 0.01, "workers": 0, "schedule": "none", **train}
    return {"modality": "img", "model": model, "intensity": "zscore", "augment": {"hflip": 0.5}, "train": cfg}


def run_train(root: Path, out: str, model_spec=None, **kw):
    return stage1.train(
        "train", model_spec or spec(), label="y", ingest_path=root / "img.h5", splits_path=root / "splits.csv",
        manifest_path=root / "manifest.csv", out_dir=root / out, device=CPU, progress=False, **kw,
    )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"))


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# ------------------------------------------------------------------------------------ the engine


def test_training_lowers_the_loss_and_learns_the_planted_signal(cohort):
    model_path = run_train(cohort, "run")
    history = pd.read_csv(cohort / "run/history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    payload = torch.load(model_path, weights_only=True)
    # chosen on validation AUC; among epochs tied at the best AUC, the lowest validation loss
    best = history[history["val_auc"] == history["val_auc"].max()]
    assert payload["best_epoch"] == int(best["val_loss"].idxmin())
    assert payload["best_metric"] == pytest.approx(history["val_auc"].max())
    assert not (cohort / "run/checkpoint").exists()  # dropped once model.pt is written
    assert any((cohort / "run/tensorboard").iterdir())
    predictions = pd.read_csv(cohort / "run/predictions.csv")
    splits = pd.read_csv(cohort / "splits.csv")
    assert sorted(predictions["sample_id"]) == sorted(splits["sample_id"])
    merged = predictions.merge(splits, on="sample_id", suffixes=("", "_s"))
    assert (merged["split"] == merged["split_s"]).all()
    from sklearn.metrics import roc_auc_score

    test = predictions[predictions["split"] == "test"]
    assert roc_auc_score(test["y_true"], test["y_prob"]) > 0.8


def test_two_cpu_runs_give_identical_weights(cohort):
    a, b = run_train(cohort, "det_a"), run_train(cohort, "det_b")
    sa, sb = state(a), state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_validation_and_test_samples_never_reach_the_training_loader(cohort, monkeypatch):
    seen: list[list[str]] = []
    real = stage1.make_loader

    def spy(dataset, **kw):
        seen.append(list(getattr(dataset, "sample_ids", [])))
        return real(dataset, **kw)

    monkeypatch.setattr(stage1, "make_loader", spy)
    run_train(cohort, "spy", spec(epochs=1))
    splits = pd.read_csv(cohort / "splits.csv").set_index("sample_id")["split"]
    train_ids, val_ids = seen[0], seen[1]
    assert set(splits[train_ids]) == {"train"}
    assert set(splits[val_ids]) == {"val"}


def test_partition_by_fold_keeps_test_out(tmp_path):
    root = write_cohort(tmp_path, folds=3)
    table = stage1.load_data(root / "img.h5", root / "splits.csv", root / "manifest.csv", "y").table
    for k in range(3):
        train, val = stage1.partition(table, k)
        assert set(train["split"]) == set(val["split"]) == {"train"}
        assert (val["fold"] == k).all() and (train["fold"] != k).all()
        assert not set(train["patient_id"]) & set(val["patient_id"])


KILL_AFTER_SECOND_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from medflow.train import engine, stage1
    saves = []
    real = engine.Trainer._save_checkpoint
    def save_then_die(self, *args):
        real(self, *args)
        saves.append(1)
        if len(saves) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    engine.Trainer._save_checkpoint = save_then_die
    root = sys.argv[1]
    import json
    stage1.train("train", json.loads(sys.argv[2]), label="y", ingest_path=f"{root}/img.h5",
                 splits_path=f"{root}/splits.csv", manifest_path=f"{root}/manifest.csv",
                 out_dir=f"{root}/resumed", device=torch.device("cpu"), progress=False)
    """
)


def test_a_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(cohort, monkeypatch):
    import json

    model_spec = spec(epochs=4, schedule="cosine")
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_SECOND_CHECKPOINT, str(cohort), json.dumps(model_spec)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (cohort / "resumed/checkpoint/last.pt").is_file() and not (cohort / "resumed/model.pt").exists()
    assert torch.load(cohort / "resumed/checkpoint/last.pt", weights_only=True)["epoch"] == 1

    epochs_trained: list[int] = []
    real_epoch = Trainer._train_epoch

    def counting(self, loader, epoch):
        epochs_trained.append(epoch)
        return real_epoch(self, loader, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", counting)
    resumed = run_train(cohort, "resumed", model_spec)
    assert epochs_trained == [2, 3]  # epochs 0 and 1 were not redone
    uninterrupted = run_train(cohort, "whole", model_spec)
    ra, ua = state(resumed), state(uninterrupted)
    assert all(torch.equal(ra[k], ua[k]) for k in ua)
    history = pd.read_csv(cohort / "resumed/history.csv")
    pd.testing.assert_frame_equal(
        history.drop(columns=["seconds", "data_wait_share", "images_per_second"]),
        pd.read_csv(cohort / "whole/history.csv").drop(columns=["seconds", "data_wait_share", "images_per_second"]),
    )


def test_a_checkpoint_of_another_config_is_not_resumed(cohort):
    run_train(cohort, "other", spec(epochs=2))
    out = cohort / "other"
    (out / "checkpoint").mkdir()
    torch.save({"fingerprint": "something else", "epoch": 1}, out / "checkpoint/last.pt")
    run_train(cohort, "other", spec(epochs=2))
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [0, 1]


# ------------------------------------------------------------------------------- model families


class _Fixed(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_family_lowers_its_training_loss(tmp_path, name):
    torch.manual_seed(0)
    volume = name.endswith("_3d")
    x = torch.randn(8, 2, 8, 16, 16) if volume else torch.randn(8, 1, 32, 32)
    y = torch.tensor([0.0, 1.0] * 4)
    x[y == 1] += 1.0
    model = build_model(name, in_channels=x.shape[1])
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-3, schedule="none", workers=0, pos_weight=None)
    loader = make_loader(_Fixed(x, y), batch_size=8, shuffle=False, seed=0, workers=0)
    trainer = Trainer(model, cfg, tmp_path, device=CPU, step=bce_step(), fingerprint=name, progress=False)
    result = trainer.fit(loader, loader)
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]


def test_early_stopping_stops_on_the_validation_metric(tmp_path):
    x, y = torch.randn(8, 1, 16, 16), torch.tensor([0.0, 1.0] * 4)

    def constant(model, batch, device):  # a val metric that never improves after epoch 0
        logits = model(batch["x"])[:, 0] * 0 + batch["index"].float() * 0
        return StepOutput(logits.sum() * 0 + model(batch["x"]).mean() ** 2, logits.detach(), batch["y"], len(logits))

    cfg = TrainConfig(epochs=10, batch_size=8, early_stopping=2, schedule="none", workers=0, monitor="val_loss")
    loader = make_loader(_Fixed(x, y), batch_size=8, shuffle=False, seed=0, workers=0)
    trainer = Trainer(build_model("convnet"), cfg, tmp_path, device=CPU, step=constant, fingerprint="x", progress=False)
    result = trainer.fit(loader, loader)
    assert len(result.history) < 10
    assert result.best_epoch == int(result.history["val_loss"].idxmin())


def test_a_saturated_validation_auc_goes_to_the_epoch_with_the_lower_loss(tmp_path):
    """Separable validation data: the AUC is 1.0 from the first epoch on, so without a tie-break the
    first (least trained) epoch would be kept; the loss keeps falling, and its epoch is kept."""
    x = torch.randn(16, 1, 16, 16)
    y = torch.tensor([0.0, 1.0] * 8)
    x[y == 1] += 2.0  # separable by mean intensity

    def step(model, batch, device):
        logits = model(batch["x"])[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["y"])
        # scores that rank perfectly whatever the weights: the AUC is 1.0 at every epoch
        return StepOutput(loss, batch["y"].detach() + 0.0 * logits.detach(), batch["y"], len(logits))

    cfg = TrainConfig(epochs=6, batch_size=16, schedule="none", workers=0, lr=0.01)
    loader = make_loader(_Fixed(x, y), batch_size=16, shuffle=False, seed=0, workers=0)
    trainer = Trainer(build_model("convnet"), cfg, tmp_path, device=CPU, step=step, fingerprint="x", progress=False)
    result = trainer.fit(loader, loader)
    assert (result.history["val_auc"] == 1.0).all()
    assert result.best_epoch == int(result.history["val_loss"].idxmin()) > 0


# ---------------------------------------------------------------------------------- the jobs


def test_features_are_keyed_by_id_and_equal_the_encoder_output(cohort):
    model_path = run_train(cohort, "feat", spec(epochs=1))
    out = cohort / "features.h5"
    stage1.extract(spec(epochs=1), label="y", ingest_path=cohort / "img.h5", splits_path=cohort / "splits.csv",
                   manifest_path=cohort / "manifest.csv", model_path=model_path, out_path=out, device=CPU,
                   progress=False)
    ids, features, offsets = read_features(out)
    with h5py.File(cohort / "img.h5") as f:
        assert ids == list(f["sample_id"].asstr()[:])
        image = f["images"][17]
    assert offsets is None and features.shape == (len(ids), 64) and features.dtype == np.float32
    model = stage1.load_trained(stage1.load_data(cohort / "img.h5", cohort / "splits.csv", cohort / "manifest.csv",
                                                 "y"), spec(), model_path).eval()
    x = torch.from_numpy((image - image.mean()) / image.std())[None, None]
    with torch.no_grad():
        np.testing.assert_allclose(features[17], model.features(x)[0].numpy(), rtol=1e-4, atol=1e-5)


def test_pretrain_then_frozen_encoder_classifier(tmp_path):
    root = write_cohort(tmp_path, n=48)
    contrastive = {**spec("convnet"), "pretrain": "simclr", "temperature": 0.5,
                   "augment": {"hflip": 0.5, "noise": 0.1}, "pretrain_train": {"epochs": 2, "batch_size": 8, "workers": 0}}
    encoder = stage1.train("pretrain", contrastive, label="y", ingest_path=root / "img.h5",
                           splits_path=root / "splits.csv", manifest_path=root / "manifest.csv",
                           out_dir=root / "pre", device=CPU, progress=False)
    history = pd.read_csv(root / "pre/history.csv")
    assert history["val_auc"].isna().all() and history["val_loss"].notna().all()
    model_path = run_train(root, "cls", contrastive, encoder=encoder)
    pre = {k.removeprefix("backbone."): v for k, v in state(encoder).items() if k.startswith("backbone.encoder.")}
    trained = state(model_path)
    # the encoder, BatchNorm statistics included, is exactly the pre-trained one; the head moved
    assert all(torch.equal(trained[k], v) for k, v in pre.items())
    assert not torch.equal(trained["head.1.weight"], build_model("convnet").state_dict()["head.1.weight"])


def test_pretraining_for_fold_k_never_sees_fold_k(tmp_path, monkeypatch):
    """Fold k's out-of-fold predictions and threshold come from its frozen encoder: SupCon on fold k's
    labels (even only to pick the epoch) would leak them, so fold k's pre-training draws no fold k sample."""
    root = write_cohort(tmp_path, n=48, folds=3)
    drawn: list[str] = []
    real = stage1.make_dataset

    def spy(data, rows, model_spec, **kw):
        drawn.extend(rows["sample_id"])
        return real(data, rows, model_spec, **kw)

    monkeypatch.setattr(stage1, "make_dataset", spy)
    supcon = {**spec("convnet"), "pretrain": "supcon", "augment": {"hflip": 0.5, "noise": 0.1},
              "pretrain_train": {"epochs": 1, "batch_size": 8, "workers": 0}}
    training = pd.read_csv(root / "splits.csv", dtype={"sample_id": str}).query("split == 'train'")
    for k in range(3):
        drawn.clear()
        stage1.train("pretrain", supcon, label="y", ingest_path=root / "img.h5", splits_path=root / "splits.csv",
                     manifest_path=root / "manifest.csv", out_dir=root / f"fold{k}/pretrain", device=CPU,
                     progress=False, fold=k)
        assert set(drawn) == set(training.sample_id[training.fold != k])


def test_slice_stacks_train_on_slice_labels_and_score_studies_by_their_top_slice(tmp_path):
    rng = np.random.default_rng(0)
    n, depth, size = 24, 6, 16
    ids = [f"st{i:02d}" for i in range(n)]
    y = (np.arange(n) % 2).astype(int)
    slices = rng.normal(0, 1, (n * depth, size, size)).astype(np.float32)
    slice_label = np.zeros(n * depth, dtype=np.int8)
    for i in np.flatnonzero(y):
        slice_label[i * depth + 2 : i * depth + 4] = 1
    slices[slice_label == 1, 4:12, 4:12] += 2.0
    with h5py.File(tmp_path / "img.h5", "w") as f:
        f.create_dataset("sample_id", data=utf8(ids))
        f.create_dataset("images", data=(slices * 100).astype(np.int16), chunks=(1, size, size))
        f.create_dataset("offsets", data=np.arange(0, n * depth + 1, depth))
        f.create_dataset("slice_label", data=slice_label).attrs["label"] = "pe_present_on_image"
        f.attrs["kind"], f.attrs["units"] = "slices", "HU"
    manifest = pd.DataFrame({"sample_id": ids, "patient_id": ids, "center": "A", "y": y})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    make_splits(manifest, label="y", fractions={"train": 0.6, "val": 0.2, "test": 0.2}, seed=0).to_csv(
        tmp_path / "splits.csv", index=False)
    run_train(tmp_path, "pe", {**spec(epochs=2), "sampler": "balanced"})
    per_slice = pd.read_csv(tmp_path / "pe/slice_predictions.csv")
    assert len(per_slice) == n * depth and set(per_slice["task"]) == {"pe_present_on_image"}
    assert per_slice.groupby("sample_id")["slice"].apply(list).map(lambda s: s == list(range(depth))).all()
    predictions = pd.read_csv(tmp_path / "pe/predictions.csv")
    top = per_slice.groupby("sample_id")["y_prob"].max()
    np.testing.assert_allclose(predictions.set_index("sample_id")["y_prob"].loc[top.index], top, rtol=1e-6)


def test_fold_ensemble_scores_training_samples_out_of_fold_and_the_rest_by_the_mean(tmp_path):
    root = write_cohort(tmp_path, folds=3)
    splits = pd.read_csv(root / "splits.csv")
    paths = {}
    for k in range(3):
        frame = splits.assign(task="y", y_true=0.0, y_prob=0.1 * (k + 1))
        paths[k] = tmp_path / f"fold{k}.csv"
        frame.drop(columns="fold").to_csv(paths[k], index=False)
    out = folds.fold_ensemble(paths, root / "splits.csv", tmp_path / "ensemble.csv")
    result = pd.read_csv(out).merge(splits[["sample_id", "fold"]], on="sample_id")
    cv = result[result["fold"] >= 0]
    assert (cv["split"] == "val").all()
    np.testing.assert_allclose(cv["y_prob"], 0.1 * (cv["fold"] + 1))
    rest = result[result["fold"] < 0]
    assert set(rest["split"]) <= {"test", "external"} and len(rest) > 0
    np.testing.assert_allclose(rest["y_prob"], 0.2)
    assert len(result) == len(splits)


def test_the_fold_ensemble_does_not_import_torch():
    """Its rule only combines CSV files: a torch import would cost it seconds for nothing."""
    code = "import sys, medflow.train.folds; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"



def test_data_parallel_training_on_two_cpu_ranks_matches_one_process(tmp_path, monkeypatch):
    """gpus: N > 1 runs DistributedDataParallel under torchrun; here two CPU ranks (gloo). The ranks
    split every batch of the 1-process run between them, so the metrics agree; scores differ only
    through BatchNorm, whose batch statistics stay per rank (the exact equivalence without
    BatchNorm is tested in test_distributed)."""
    from sklearn.metrics import roc_auc_score

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = write_cohort(tmp_path, n=80)
    model_spec = {**spec(epochs=3), "augment": {}}  # no augmentation draws: they differ between processes
    paths = dict(label="y", ingest_path=root / "img.h5", splits_path=root / "splits.csv",
                 manifest_path=root / "manifest.csv", progress=False)
    model_path = stage1.train_replicated(2, "train", model_spec, threads=2, out_dir=root / "ddp", **paths)
    stage1.train("train", model_spec, out_dir=root / "single", device=CPU, **paths)
    ddp, single = (pd.read_csv(root / f"{name}/history.csv") for name in ("ddp", "single"))
    assert list(ddp["epoch"]) == [0, 1, 2] and ddp["train_loss"].notna().all()
    assert ddp["val_auc"].tolist() == pytest.approx(single["val_auc"].tolist(), abs=0.05)
    scores = {name: pd.read_csv(root / f"{name}/predictions.csv").set_index("sample_id")
              for name in ("ddp", "single")}
    ddp_scores, single_scores = scores["ddp"], scores["single"].loc[scores["ddp"].index]
    assert len(ddp_scores) == 80
    test = ddp_scores["split"] == "test"
    auc = {name: roc_auc_score(frame.loc[test, "y_true"], frame.loc[test, "y_prob"])
           for name, frame in (("ddp", ddp_scores), ("single", single_scores))}
    assert auc["ddp"] == pytest.approx(auc["single"], abs=0.05) and auc["single"] > 0.8
    assert np.corrcoef(ddp_scores["y_prob"], single_scores["y_prob"])[0, 1] > 0.95
    assert torch.load(model_path, weights_only=True)["best_epoch"] in (0, 1, 2)


def test_data_parallel_batch_must_split_evenly():
    assert stage1.rank_batch_size(8, 2) == 4
    with pytest.raises(ValueError, match="multiple of 3"):
        stage1.rank_batch_size(8, 3)


def test_shard_sampler_splits_every_epoch_between_ranks():
    from medflow.data import ShardSampler
    from medflow.data.samplers import BalancedSampler

    shards = [ShardSampler(10, rank=r, world_size=3, seed=1) for r in range(3)]
    for s in shards:
        s.set_epoch(4)
    items = [list(s) for s in shards]
    assert all(len(i) == 4 for i in items)
    assert set().union(*map(set, items)) == set(range(10))
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    base = [ShardSampler(8, rank=r, world_size=2, seed=0, base=BalancedSampler(labels, seed=0)) for r in range(2)]
    for s in base:
        s.set_epoch(1)
    together = sorted(list(base[0]) + list(base[1]))
    assert together == sorted(BalancedSampler(labels, seed=0).indices(1).tolist())


def test_batchnorm_recalibration_uses_the_final_weights_and_spares_frozen_layers(tmp_path):
    torch.manual_seed(0)
    trainable = torch.nn.BatchNorm1d(3)
    frozen = torch.nn.BatchNorm1d(3)
    for p in frozen.parameters():
        p.requires_grad_(False)
    frozen.running_mean.fill_(7.0)
    model = torch.nn.Sequential(trainable, frozen)
    batches = [{"x": torch.randn(8, 3) * 2 + torch.tensor([1.0, -2.0, 5.0]), "y": torch.zeros(8)} for _ in range(4)]

    def step(m, batch, device):
        return StepOutput(m(batch["x"]).sum() * 0.0, None, None, len(batch["x"]))

    trainer = Trainer(model, TrainConfig(epochs=1), tmp_path, device=torch.device("cpu"), step=step,
                      fingerprint="bn", progress=False)
    trainer._recalibrate_batchnorm(batches, batches=3)
    expected = torch.stack([b["x"].mean(0) for b in batches[:3]]).mean(0)
    torch.testing.assert_close(trainable.running_mean, expected)
    assert trainable.momentum == 0.1 and torch.all(frozen.running_mean == 7.0)
