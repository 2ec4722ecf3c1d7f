"""Stage 1: one image network of a study, trained on its ingest file and its splits.

Three jobs share this module (each a Snakemake rule, so a change reruns only what it touches):

- ``pretrain`` — contrastive pre-training of the encoder (SimCLR NT-Xent, or SupCon with labels)
  on the *training* split, its loss watched on the validation split; with ``fold`` = k on the
  training folds ≠ k only (one encoder per fold);
- ``train`` — the supervised network (for a pre-trained encoder: the encoder frozen, BatchNorm
  included, and a classifier head on top); with ``fold`` = k it trains on the training folds ≠ k
  and selects on fold k;
- ``features`` — the trained encoder's feature vectors of every ingested sample.

Samples are joined by ``sample_id`` (ingest file ↔ splits ↔ manifest labels); samples the ingest
left out (problems.csv) are logged and absent. Validation and test samples are never in a
training loader: :func:`partition` is the one place that decides who trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch import nn

from medflow.config import fingerprint, spec_for
from medflow.data import H5Samples, H5Slices, Intensity, TwoViews, build_augment, make_loader
from medflow.data.samplers import BalancedSampler, ShardSampler
from medflow.io.contracts import read_contract_csv, read_manifest_table, write_contract_csv, write_predictions
from medflow.io.features import write_features
from medflow.io.hashing import sha256_file
from medflow.models import Classifier, ProjectionHead, build_model, load_weights, nt_xent_loss, supcon_loss
from medflow.stages import STAGE_VERSIONS
from medflow.train.config import TrainConfig
from medflow.train.devices import loader_workers
from medflow.train.engine import StepOutput, Trainer, auto_pos_weight, bce_step, seed_everything
from medflow.train.inference import feature_vectors, probabilities, run_inference

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ data


@dataclass
class Stage1Data:
    """The ingest file of one modality and, per ingested sample, its split, fold and label."""

    path: Path
    kind: str
    channels: int
    has_mask: bool
    window: tuple[float, float] | None
    table: pd.DataFrame  # sample_id, patient_id, center, split, fold, y — in ingest-file order
    slice_task: str | None  # slice stacks: the name of the per-slice label
    source_hash: str  # the ingest file's record of what produced it


def load_data(ingest_path: str | Path, splits_path: str | Path, manifest_path: str | Path, label: str) -> Stage1Data:
    ingest_path = Path(ingest_path)
    with h5py.File(ingest_path, "r") as f:
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["sample_id"][:]]
        kind = str(f.attrs["kind"])
        channels = int(f.attrs.get("channels", 1))
        has_mask = "masks" in f
        window = tuple(float(v) for v in f.attrs["window"]) if "window" in f.attrs else None
        slice_task = str(f["slice_label"].attrs.get("label", "slice_label")) if "slice_label" in f else None
        source_hash = str(f.attrs.get("source_hash", ""))
    splits = read_contract_csv(splits_path)
    manifest = read_manifest_table(manifest_path)
    if label not in manifest.columns:
        raise ValueError(f"label {label!r} is not a column of {manifest_path}")
    labels = manifest[["sample_id", label]].rename(columns={label: "y"})
    labels["y"] = labels["y"].astype("float64")
    table = pd.DataFrame({"sample_id": ids}).merge(splits, on="sample_id", how="left", validate="one_to_one")
    unsplit = table["split"].isna()
    if unsplit.any():
        raise ValueError(
            f"{int(unsplit.sum())} sample(s) of {ingest_path} are not in {splits_path} "
            f"(e.g. {', '.join(table.loc[unsplit, 'sample_id'][:3])}): rerun the split stage"
        )
    table = table.merge(labels, on="sample_id", how="left", validate="one_to_one")
    left_out = sorted(set(splits["sample_id"]) - set(ids))
    if left_out:
        log.warning("%d sample(s) of the splits were left out by ingest (see its problems.csv), e.g. %s",
                    len(left_out), ", ".join(left_out[:5]))
    return Stage1Data(ingest_path, kind, channels, has_mask, window, table, slice_task, source_hash)


def partition(table: pd.DataFrame, fold: int | None, job: str = "train") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows). Without folds: the train and val splits. With fold k:
    the training split's folds ≠ k, and fold k; ``pretrain`` of fold k watches its loss on the val
    split instead, because fold k's out-of-fold predictions (and its threshold) must come from an
    encoder that never saw fold k. Test and external samples are never returned."""
    val_split = table[table["split"] == "val"]
    if fold is None:
        return table[table["split"] == "train"], val_split
    train = table[table["split"] == "train"]
    if not (train["fold"] == fold).any():
        raise ValueError(f"fold {fold} has no training samples (folds present: {sorted(train['fold'].unique())})")
    held_out = val_split if job == "pretrain" else train[train["fold"] == fold]
    return train[train["fold"] != fold], held_out


def in_channels(data: Stage1Data, spec: dict[str, Any]) -> int:
    if data.kind == "volume":
        return 1 + int(data.has_mask and spec.get("mask", True))
    return data.channels if data.kind == "image" else 1


def make_dataset(data: Stage1Data, rows: pd.DataFrame, spec: dict[str, Any], *, augment: bool) -> Any:
    ndim = 3 if data.kind == "volume" else 2
    with_mask = data.kind == "volume" and data.has_mask and spec.get("mask", True)
    transform = build_augment(spec.get("augment") or {}, ndim, mask_channel=1 if with_mask else None) if augment else None
    intensity = Intensity.from_config(spec.get("intensity", "auto"), data.window)
    ids = rows["sample_id"].tolist()
    if data.kind == "slices":
        return H5Slices(data.path, ids, None, intensity=intensity, augment=transform)
    return H5Samples(data.path, ids, rows["y"].tolist(), intensity=intensity, augment=transform, with_mask=with_mask)


def item_labels(dataset: Any, rows: pd.DataFrame) -> np.ndarray:
    """The label of every item: per slice for slice stacks, else per sample."""
    if isinstance(dataset, H5Slices):
        return np.asarray(dataset.slice_labels, dtype=float)
    return rows["y"].to_numpy(dtype=float)


# ----------------------------------------------------------------------------------------- models


class Contrastive(nn.Module):
    """Encoder + SimCLR projection head (2048 → 512 → 128); the head is dropped after pre-training."""

    def __init__(self, backbone: Classifier) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = ProjectionHead(backbone.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone.features(x))


def contrastive_step(method: str, temperature: float):  # type: ignore[no-untyped-def]
    def step(model: nn.Module, batch: dict[str, Any], device: torch.device) -> StepOutput:
        z1, z2 = model(batch["x1"]).float(), model(batch["x2"]).float()
        if method == "supcon":
            y = batch["y"]
            loss = supcon_loss(torch.cat([z1, z2]), torch.cat([y, y]), temperature)
        else:
            loss = nt_xent_loss(z1, z2, temperature)
        return StepOutput(loss, count=len(z1))

    return step


def build_network(data: Stage1Data, spec: dict[str, Any], encoder: str | Path | None = None) -> Classifier:
    model = build_model(spec["model"], in_channels=in_channels(data, spec), num_outputs=1)
    if spec.get("weights"):
        load_weights(model, spec["weights"])
    if encoder is not None:  # weights_only: a model file is data, never code (see medflow.train.engine)
        state = torch.load(encoder, map_location="cpu", weights_only=True)["state_dict"]
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.encoder.")}
        missing, unexpected = model.load_state_dict(backbone, strict=False)
        if unexpected or any(k.startswith("encoder.") for k in missing):
            raise ValueError(f"encoder {encoder} does not fit {spec['model']}: unexpected {unexpected[:3]}, "
                             f"missing {[k for k in missing if k.startswith('encoder.')][:3]}")
        model.freeze_encoder().normalise_features()
    return model


def load_trained(data: Stage1Data, spec: dict[str, Any], model_path: str | Path) -> Classifier:
    model = build_model(spec["model"], in_channels=in_channels(data, spec), num_outputs=1)
    if spec.get("pretrain", "none") != "none":
        model.normalise_features()
    model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True)["state_dict"])
    return model


# ------------------------------------------------------------------------------------------- jobs


def _data_key(data: Stage1Data, splits_path: str | Path) -> list[str]:
    return [sha256_file(splits_path), data.source_hash, str(data.path.stat().st_size)]


def train(
    job: str,
    spec: dict[str, Any],
    *,
    label: str,
    ingest_path: str | Path,
    splits_path: str | Path,
    manifest_path: str | Path,
    out_dir: str | Path,
    device: torch.device,
    fold: int | None = None,
    encoder: str | Path | None = None,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Path:
    """Run the ``pretrain`` or ``train`` job of one stage-1 model; return ``out_dir/model.pt``.

    ``train`` also writes ``predictions.csv`` of every ingested sample (all splits), and for
    slice stacks ``slice_predictions.csv``. ``rank``/``world_size``: one replica of a
    data-parallel run (see :func:`train_replicated`); each rank trains on its shard of every epoch.
    """
    out_dir = Path(out_dir)
    data = load_data(ingest_path, splits_path, manifest_path, label)
    train_rows, val_rows = partition(data.table, fold, job)
    key = "pretrain_train" if job == "pretrain" else "train"
    cfg = TrainConfig.from_mapping(spec.get(key))
    log.info("%s %s on %s: %d training and %d validation samples (fold %s), device %s",
             job, spec["model"], data.path.name, len(train_rows), len(val_rows), fold, device)
    if len(train_rows) == 0:
        raise ValueError(f"no training samples for {data.path.name} (fold {fold})")

    seed_everything(cfg.seed)  # the initial weights depend on the seed alone, not on what ran before
    train_set = make_dataset(data, train_rows, spec, augment=True)
    val_set = make_dataset(data, val_rows, spec, augment=job == "pretrain")
    labels = item_labels(train_set, train_rows)
    if job == "pretrain":
        augment = build_augment(spec.get("augment") or {}, 3 if data.kind == "volume" else 2)
        train_set = TwoViews(make_dataset(data, train_rows, spec, augment=False), augment)
        val_set = TwoViews(make_dataset(data, val_rows, spec, augment=False), augment)
        model: nn.Module = Contrastive(build_network(data, spec))
        step = contrastive_step(spec["pretrain"], float(spec.get("temperature", 0.5)))
        if cfg.monitor == "val_auc":
            cfg.monitor = "val_loss"  # a contrastive loss has no AUC
    else:
        pos_weight = auto_pos_weight(labels) if cfg.pos_weight == "auto" else cfg.pos_weight
        if spec.get("sampler") == "balanced" and cfg.pos_weight == "auto":
            pos_weight = None  # the sampler already balances the classes
        model = build_network(data, spec, encoder)
        step = bce_step(pos_weight)  # with a pre-trained encoder, the Classifier keeps it frozen

    sampler = None
    if spec.get("sampler") == "balanced" and job != "pretrain":
        sampler = BalancedSampler(labels, seed=cfg.seed)
    # one process draws its epochs like rank 0 of 1, so a data-parallel run sees the same batches
    sampler = ShardSampler(len(train_set), rank=rank, world_size=world_size, seed=cfg.seed, base=sampler)
    pin = device.type == "cuda"
    workers = loader_workers(cfg.workers, device.type)
    train_loader = make_loader(train_set, batch_size=rank_batch_size(cfg.batch_size, world_size),
                               shuffle=False, seed=cfg.seed,
                               workers=workers, sampler=sampler, drop_last=len(train_set) > cfg.batch_size,
                               pin_memory=pin)
    val_loader = make_loader(val_set, batch_size=cfg.batch_size, shuffle=False, seed=cfg.seed,
                             workers=workers, pin_memory=pin, persistent=job != "pretrain")
    print_key = fingerprint({"job": job, "spec": spec_for(job, spec), "label": label, "fold": fold,
                             "data": _data_key(data, splits_path), "stage": STAGE_VERSIONS["stage1"],
                             "encoder": sha256_file(encoder) if encoder else None})
    metadata = {"model_name": spec["model"], "in_channels": in_channels(data, spec), "job": job, "fold": fold,
                "label": label, "modality": spec["modality"]}
    trainer = Trainer(model, cfg, out_dir, device=device, step=step, fingerprint=print_key, metadata=metadata,
                      progress=progress, rank=rank, world_size=world_size,
                      unused_parameters=job == "pretrain")  # the classifier waits for stage B
    trainer.fit(train_loader, val_loader)
    if job == "train" and rank == 0:
        predict(data, spec, trainer.model_path, out_dir, label=label, device=device, progress=progress)
    return trainer.model_path


def rank_batch_size(batch_size: int, world_size: int) -> int:
    """Each rank's share of ``train.batch_size``, which is the batch of one optimiser step however
    many ranks compute it: with the interleaved shards of :class:`ShardSampler`, N ranks see
    together exactly the batches one process would, so a data-parallel run matches a single one
    (up to BatchNorm, whose statistics stay per rank)."""
    if batch_size % world_size:
        raise ValueError(
            f"train.batch_size = {batch_size} cannot be split evenly between {world_size} data-parallel "
            f"ranks (gpus: {world_size}); use a multiple of {world_size}"
        )
    return batch_size // world_size


def _rank_main(rank: int, world_size: int, job: str, spec: dict[str, Any], kwargs: dict[str, Any]) -> Path:
    device = torch.device(f"cuda:{rank}") if torch.cuda.is_available() else torch.device("cpu")
    return train(job, spec, **kwargs, device=device, rank=rank, world_size=world_size)


def train_replicated(
    world_size: int, job: str, spec: dict[str, Any], *, threads: int | None = None, **kwargs: Any
) -> Path:
    """:func:`train` data-parallel on ``world_size`` ranks (DistributedDataParallel under torchrun,
    one process and one device per rank; gloo on the CPU, where ``threads`` are shared out between
    the ranks). ``kwargs`` are :func:`train`'s, without ``device``."""
    from medflow.train.distributed import launch

    per_rank = max(1, threads // world_size) if threads else None
    return launch(_rank_main, world_size, job, spec, kwargs, threads_per_rank=per_rank)


def _inference_loader(data: Stage1Data, spec: dict[str, Any], device: torch.device) -> tuple[Any, Any]:
    cfg = TrainConfig.from_mapping(spec.get("train"))
    dataset = make_dataset(data, data.table, spec, augment=False)
    loader = make_loader(dataset, batch_size=cfg.batch_size * 2, shuffle=False, seed=0,
                         workers=loader_workers(cfg.workers, device.type),
                         pin_memory=device.type == "cuda")
    return dataset, loader


def predict(
    data: Stage1Data, spec: dict[str, Any], model_path: Path, out_dir: Path, *, label: str,
    device: torch.device, progress: bool = True,
) -> Path:
    """predictions.csv (one row per ingested sample, every split); slice stacks: the study score is
    the highest slice probability, and slice_predictions.csv holds every slice."""
    model = load_trained(data, spec, model_path).to(device)
    dataset, loader = _inference_loader(data, spec, device)
    probs = run_inference(model, loader, device, probabilities, desc="predict", progress=progress)
    table = data.table
    if isinstance(dataset, H5Slices):
        sample = np.asarray(dataset.slice_sample)
        slices = pd.DataFrame({"sample_id": table["sample_id"].to_numpy()[sample],
                               "slice": _slice_index(sample), "task": data.slice_task,
                               "y_true": np.asarray(dataset.slice_labels, dtype=float), "y_prob": probs})
        write_contract_csv(slices, out_dir / "slice_predictions.csv")
        study_prob = pd.Series(probs).groupby(sample).max()
        probs = study_prob.reindex(range(len(table))).to_numpy()
    path = out_dir / "predictions.csv"
    write_predictions(table.assign(task=label, y_true=table["y"], y_prob=probs), path)
    return path


def _slice_index(sample: np.ndarray) -> np.ndarray:
    """0, 1, 2, … within each sample's run of slices."""
    starts = np.r_[0, np.flatnonzero(np.diff(sample)) + 1]
    index = np.arange(len(sample))
    return index - np.repeat(starts, np.diff(np.r_[starts, len(sample)]))


def extract(
    spec: dict[str, Any], *, label: str, ingest_path: str | Path, splits_path: str | Path,
    manifest_path: str | Path, model_path: str | Path, out_path: str | Path, device: torch.device,
    progress: bool = True,
) -> Path:
    """The features file of one trained model: every ingested sample (every slice for slice stacks)."""
    data = load_data(ingest_path, splits_path, manifest_path, label)
    model = load_trained(data, spec, model_path).to(device)
    dataset, loader = _inference_loader(data, spec, device)
    features = run_inference(model, loader, device, feature_vectors, desc="features", progress=progress)
    offsets = None
    if isinstance(dataset, H5Slices):
        counts = np.bincount(np.asarray(dataset.slice_sample), minlength=len(data.table))
        offsets = np.r_[0, np.cumsum(counts)]
    write_features(out_path, data.table["sample_id"].tolist(), features, offsets=offsets,
                   attrs={"model": spec["model"], "modality": spec["modality"], "source": str(model_path)})
    return Path(out_path)
