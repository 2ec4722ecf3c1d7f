"""The EHR study's heads: unimodal models and early / joint / late fusion.

Each modality has an encoder chosen by the shape of its input: a sequence (the binned EHR events
grid, the doc2vec vectors of an admission's notes) goes through a bidirectional LSTM max-pooled
over its valid steps (an admission without notes gives a zero vector); a vector (chest X-ray
features from stage 1) through a linear layer with a ReLU. Vector inputs are z-scored with
statistics of the training split.

- ``ehr_unimodal``: one encoder + linear; it also writes ``embeddings.h5`` (its encoder's output
  for every sample), the frozen input of early fusion;
- ``ehr_early``: the unimodal embeddings, frozen, concatenated → MLP with a nonlinearity (the
  published "MLP" had none, so it was linear);
- ``ehr_joint``: all encoders trained end to end, concatenated → linear;
- ``ehr_late`` (:mod:`medflow.heads.late`): the mean of the unimodal heads' probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medflow.heads.inputs import FeatureScaler, HeadData, Ragged
from medflow.heads.neural import NeuralHead, masked_pool, pad_sequences, run_lstm
from medflow.io.features import write_features
from medflow.train.inference import run_inference


class SequenceEncoder(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.size = 2 * hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return masked_pool(run_lstm(self.lstm, x, lengths), lengths, "max")


class VectorEncoder(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU())
        self.size = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FusionNet(nn.Module):
    """Encoders of the named inputs, concatenated, then a classifier (``mlp``: one hidden layer)."""

    def __init__(self, encoders: Mapping[str, nn.Module], n_out: int, dropout: float, mlp: int = 0) -> None:
        super().__init__()
        self.names = list(encoders)
        self.encoders = nn.ModuleList(encoders.values())
        size = sum(int(e.size) for e in self.encoders)
        if mlp:
            self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, mlp), nn.ReLU(),
                                          nn.Dropout(dropout), nn.Linear(mlp, n_out))
        else:
            self.classify = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, n_out))

    def embed(self, batch: Mapping[str, Any]) -> torch.Tensor:
        parts = []
        for name, encoder in zip(self.names, self.encoders, strict=True):
            value = batch[name]
            parts.append(encoder(*value) if isinstance(value, list | tuple) else encoder(value))
        return torch.cat(parts, dim=1)

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.classify(self.embed(batch))


class EHRHead(NeuralHead):
    """``ehr_unimodal`` and ``ehr_joint`` (encoders trained here); ``ehr_early`` with ``frozen``."""

    default_train: Mapping[str, Any] = {"epochs": 25, "batch_size": 16, "optimizer": "adam", "lr": 1e-3,
                                        "weight_decay": 1e-4, "workers": 0, "early_stopping": 8}  # fmt: skip

    def prepare(self, train: HeadData) -> None:
        self.scalers_ = {name: FeatureScaler().fit(train.blocks[name]) for name in self.inputs
                         if not isinstance(train.blocks[name], Ragged)}

    def build(self, train: HeadData) -> nn.Module:
        hidden, dropout = int(self.spec.get("hidden", 64)), float(self.spec.get("dropout", 0.1))
        encoders: dict[str, nn.Module] = {}
        for name in self.inputs:
            block = train.blocks[name]
            if isinstance(block, Ragged):
                encoders[name] = SequenceEncoder(block.dim, hidden)
            elif self.spec["type"] == "ehr_early":
                encoders[name] = nn.Identity()
                encoders[name].size = np.asarray(block).shape[1]  # type: ignore[assignment]
            else:
                encoders[name] = VectorEncoder(np.asarray(block).shape[1], hidden, dropout)
        mlp = hidden if self.spec["type"] == "ehr_early" else 0
        return FusionNet(encoders, len(self.tasks), dropout, mlp)

    def encode(self, data: HeadData) -> HeadData:
        return data.with_blocks(**{name: scaler.transform(data.blocks[name]) for name, scaler in self.scalers_.items()})

    def collate(self, data: HeadData, index: list[int]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for name in self.inputs:
            block = data.blocks[name]
            if isinstance(block, Ragged):
                batch[name] = list(pad_sequences([block.item(i) for i in index], block.dim))
            else:
                batch[name] = torch.as_tensor(block[index])
        return batch

    def write_extras(self, data: HeadData, out_dir: Path) -> None:
        if self.spec["type"] != "ehr_unimodal":
            return
        loader = self._batches(data, shuffle=False, seed=0)
        embeddings = run_inference(self.module_, loader, self.device_, lambda m, b: m.embed(b),
                                   desc="embeddings", progress=False, key=None)
        write_features(out_dir / "embeddings.h5", data.table["sample_id"].tolist(), embeddings,
                       attrs={"model": self.spec["type"], "inputs": ",".join(self.inputs)})
