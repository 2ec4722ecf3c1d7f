"""The shared fitting of neural heads: the stage-1 training engine on in-memory inputs.

A neural head defines its network (:meth:`NeuralHead.build`) and how a batch of samples becomes
tensors (:meth:`NeuralHead.collate`); this module trains it with :class:`medflow.train.engine.Trainer`
(checkpoints, resume, history.csv, TensorBoard, best epoch on the validation split) and a masked
multi-task binary cross-entropy, one logit per task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from medflow.config import fingerprint
from medflow.data.loader import make_loader
from medflow.heads.inputs import HeadData
from medflow.stages import STAGE_VERSIONS
from medflow.train.config import TrainConfig
from medflow.train.engine import StepOutput, Trainer, auto_pos_weight
from medflow.train.inference import run_inference

log = logging.getLogger(__name__)


class Indices(Dataset):
    """Item i is i: the head's collate function gathers the rows (inputs live in memory)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def multitask_step(pos_weights: Sequence[float | None], *, score_all: bool = False):  # type: ignore[no-untyped-def]
    """BCE over every (sample, task) with a known label. Validation AUC is computed on the first
    task's scores, or on every known entry with ``score_all`` (per-slice heads)."""
    weights = torch.tensor([1.0 if w is None else w for w in pos_weights])

    def step(model: nn.Module, batch: dict[str, Any], device: torch.device) -> StepOutput:
        logits = model(batch).float()
        y = batch["y"].float()
        known = ~torch.isnan(y)
        pos_weight = weights.to(logits.device).expand_as(logits)
        if known.any():
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits[known], y[known], pos_weight=pos_weight[known])
        else:
            loss = logits.sum() * 0.0
        if score_all:
            return StepOutput(loss, logits[known].detach(), y[known], int(known.sum()))
        return StepOutput(loss, logits[:, 0].detach(), y[:, 0], int(known[:, 0].sum()))

    return step


class NeuralHead:
    """Base of the torch heads; subclasses set :meth:`build` and :meth:`collate`."""

    default_train: Mapping[str, Any] = {"epochs": 30, "batch_size": 16, "lr": 1e-3, "workers": 0,
                                        "early_stopping": 10}

    def __init__(self, spec: Mapping[str, Any], tasks: list[str]) -> None:
        self.spec = dict(spec)
        self.tasks = tasks
        self.inputs = list(spec["inputs"])
        self.cfg = TrainConfig.from_mapping({**self.default_train, **(spec.get("train") or {})})

    # -- subclass interface ----------------------------------------------------------------------

    def build(self, train: HeadData) -> nn.Module:
        raise NotImplementedError

    def collate(self, data: HeadData, index: list[int]) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self, data: HeadData) -> HeadData:
        """``data`` with the inputs in the form batches are cut from (scaled tables, joined
        sequences), computed once per data set rather than once per batch."""
        return data

    def prepare(self, train: HeadData) -> None:
        """Fit anything learned from the training split before the network (scalers)."""

    score_all = False

    def pos_weights(self, train: HeadData) -> list[float | None]:
        """Per-task positive weights: n_negative / n_positive of the training labels for ``auto``."""
        if self.cfg.pos_weight == "auto":
            labels = train.labels()
            return [auto_pos_weight(labels[:, t]) for t in range(labels.shape[1])]
        return [self.cfg.pos_weight] * len(self.tasks)  # type: ignore[list-item]

    # -- fit / predict ---------------------------------------------------------------------------

    def _batches(self, data: HeadData, *, shuffle: bool, seed: int) -> Any:
        data = self.encode(data)
        return make_loader(Indices(len(data)), batch_size=self.cfg.batch_size, shuffle=shuffle, seed=seed,
                           workers=0, collate_fn=partial(self._collate_with_labels, data))

    def _collate_with_labels(self, data: HeadData, index: list[int]) -> dict[str, Any]:
        batch = self.collate(data, index)
        batch["y"] = torch.as_tensor(data.labels()[index], dtype=torch.float32)
        return batch

    def fit(self, train: HeadData, val: HeadData, out_dir: Path, device: torch.device | None) -> NeuralHead:
        device = device if device is not None else torch.device("cpu")
        self.prepare(train)
        torch.manual_seed(self.cfg.seed)
        self.module_ = self.build(train)
        key = fingerprint({"spec": self.spec, "tasks": self.tasks, "train": train.table["sample_id"].tolist(),
                           "val": val.table["sample_id"].tolist(), "stage": STAGE_VERSIONS["stage2"]})
        trainer = Trainer(self.module_, self.cfg, out_dir, device=device, step=multitask_step(self.pos_weights(train), score_all=self.score_all),
                          fingerprint=key, metadata={"head": self.spec, "tasks": self.tasks})
        val_loader = self._batches(val, shuffle=False, seed=self.cfg.seed) if len(val) else None
        self.result_ = trainer.fit(self._batches(train, shuffle=True, seed=self.cfg.seed), val_loader)
        best = torch.load(trainer.model_path, map_location="cpu", weights_only=True)
        self.module_.load_state_dict(best["state_dict"])
        self.module_.to(device)
        self.device_ = device
        return self

    def predict_proba(self, data: HeadData) -> np.ndarray:
        loader = self._batches(data, shuffle=False, seed=0)
        probs = run_inference(self.module_, loader, self.device_,
                              lambda m, b: torch.sigmoid(m(b).float()), desc="predict", progress=False, key=None)
        return np.asarray(probs, dtype=np.float64).reshape(len(data), len(self.tasks))

    def save(self, out_dir: Path) -> dict[str, Any]:
        return {"model_file": "model.pt", "best_epoch": self.result_.best_epoch,
                "epochs_run": len(self.result_.history), "monitor": self.result_.monitor,
                "best_metric": self.result_.best_metric}


def pad_sequences(items: Sequence[np.ndarray], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B × L_max × D zero-padded batch and the lengths (a zero-length item stays all zeros)."""
    lengths = torch.as_tensor([len(a) for a in items], dtype=torch.int64)
    out = torch.zeros(len(items), max(int(lengths.max()) if len(items) else 0, 1), dim)
    for i, a in enumerate(items):
        if len(a):
            out[i, : len(a)] = torch.as_tensor(a, dtype=torch.float32)
    return out, lengths


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-step outputs (B × L × H) of a packed, variable-length batch; h0 = c0 = 0 (torch's default),
    so a prediction never depends on a random initial state."""
    clamped = lengths.clamp(min=1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(x, clamped, batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


def masked_pool(steps: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """Pool B × L × H over the valid steps: ``max``, ``mean`` or ``last``; zero for empty items."""
    length = lengths.to(steps.device)
    valid = torch.arange(steps.shape[1], device=steps.device)[None, :] < length[:, None]
    if how == "max":
        pooled = steps.masked_fill(~valid[..., None], float("-inf")).max(dim=1).values
    elif how == "mean":
        pooled = (steps * valid[..., None]).sum(1) / length.clamp(min=1)[:, None]
    elif how == "last":
        pooled = steps[torch.arange(len(steps), device=steps.device), (length - 1).clamp(min=0)]
    else:
        raise ValueError(f"unknown pooling {how!r}; use max, mean or last")
    return torch.where((length > 0)[:, None], pooled, torch.zeros_like(pooled))
