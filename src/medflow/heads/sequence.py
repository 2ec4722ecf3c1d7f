"""LSTM heads over the per-slice feature sequences of a CT study (the PE study).

Slices enter in stack order (sorted by position at ingest, never by CSV order). Several feature
inputs (ResNeXt-50 2048-d, EfficientNet-b0 1280-d) are concatenated per slice (3328-d). Batches
are padded and packed, the initial state is zero (the published code drew it at random on every
forward, so its predictions were not repeatable).

- ``lstm_image`` scores every slice (``pe_present_on_image``); the study's score is its highest
  slice probability, as in stage 1.
- ``lstm_study`` scores the study-level exam labels from the pooled slice outputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medflow.heads.inputs import FeatureScaler, HeadData, Ragged
from medflow.heads.neural import NeuralHead, masked_pool, pad_sequences, run_lstm
from medflow.io.contracts import write_contract_csv
from medflow.train.engine import auto_pos_weight

SLICE_LABELS = "slice_labels"
SEQUENCE = "sequence"  # the feature inputs joined per slice (see SequenceHead.encode)


def concat_sequences(data: HeadData, names: list[str]) -> Ragged:
    """The inputs' per-slice features side by side; every input must have the same slices."""
    blocks = [data.blocks[n] for n in names]
    for name, block in zip(names, blocks, strict=True):
        if not isinstance(block, Ragged):
            raise ValueError(f"sequence heads need per-slice features; {name!r} has one vector per sample")
        if not np.array_equal(block.offsets, blocks[0].offsets):
            bad = np.flatnonzero(block.lengths != blocks[0].lengths)
            raise ValueError(
                f"{name!r} and {names[0]!r} disagree on the slice count of sample "
                f"{data.table['sample_id'].iloc[bad[0]] if len(bad) else '?'}: were they extracted from the same ingest file?"
            )
    return Ragged(np.hstack([b.values for b in blocks]), blocks[0].offsets)


class SliceLSTM(nn.Module):
    def __init__(self, dim: int, hidden: int, n_out: int, *, bidirectional: bool, per_slice: bool, pool: str) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, num_layers=1, batch_first=True, bidirectional=bidirectional)
        self.per_slice, self.pool = per_slice, pool
        self.out = nn.Linear(hidden * (2 if bidirectional else 1), n_out)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        steps = run_lstm(self.lstm, batch["sequence"], batch["lengths"])
        if self.per_slice:
            return self.out(steps)  # B × L × 1
        return self.out(masked_pool(steps, batch["lengths"], self.pool))


class SequenceHead(NeuralHead):
    default_train: Mapping[str, Any] = {"epochs": 20, "batch_size": 8, "optimizer": "adam", "lr": 1e-3,
                                        "workers": 0, "early_stopping": 8}  # fmt: skip
    per_slice = False

    def prepare(self, train: HeadData) -> None:
        self.features_ = [n for n in self.inputs if n != SLICE_LABELS]
        self.scaler_ = FeatureScaler().fit(concat_sequences(train, self.features_))

    def build(self, train: HeadData) -> nn.Module:
        dim = concat_sequences(train, self.features_).dim
        n_out = 1 if self.per_slice else len(self.tasks)
        return SliceLSTM(dim, int(self.spec.get("hidden", 64)), n_out,
                         bidirectional=bool(self.spec.get("bidirectional", False)),
                         per_slice=self.per_slice, pool=self.spec.get("pool", "max"))

    def encode(self, data: HeadData) -> HeadData:
        return data.with_blocks(**{SEQUENCE: self.scaler_.transform(concat_sequences(data, self.features_))})

    def collate(self, data: HeadData, index: list[int]) -> dict[str, Any]:
        sequences = data.blocks[SEQUENCE]
        x, lengths = pad_sequences([sequences.item(i) for i in index], sequences.dim)
        return {"sequence": x, "lengths": lengths}


class StudyLSTM(SequenceHead):
    """Exam labels from pooled slice outputs (``pool: last`` is the published final hidden state)."""


class ImageLSTM(SequenceHead):
    """One logit per slice against the slice labels; loss over slices with a known label."""

    per_slice = True
    score_all = True

    def pos_weights(self, train: HeadData) -> list[float | None]:
        if self.cfg.pos_weight != "auto":
            return super().pos_weights(train)
        labels = train.blocks[SLICE_LABELS].values[:, 0].astype(float)
        return [auto_pos_weight(np.where(labels < 0, np.nan, labels))]

    def _collate_with_labels(self, data: HeadData, index: list[int]) -> dict[str, Any]:
        batch = self.collate(data, index)
        labels = data.blocks[SLICE_LABELS]
        y, _ = pad_sequences([labels.item(i) for i in index], 1)
        valid = torch.arange(y.shape[1])[None, :] < batch["lengths"][:, None]
        y = torch.where(valid[..., None] & (y >= 0), y, torch.full_like(y, float("nan")))
        batch["y"] = y[..., 0]
        return batch

    def build(self, train: HeadData) -> nn.Module:
        module = super().build(train)
        return _FlattenSlices(module)

    def slice_probabilities(self, data: HeadData) -> np.ndarray:
        """Per-slice probabilities in stack order, all samples concatenated (S)."""
        module = self.module_.eval()
        data = self.encode(data)
        out = []
        with torch.inference_mode():
            for start in range(0, len(data), self.cfg.batch_size):
                index = list(range(start, min(start + self.cfg.batch_size, len(data))))
                batch = self.collate(data, index)
                batch = {k: v.to(self.device_) for k, v in batch.items()}
                probs = torch.sigmoid(module(batch).float()).cpu().numpy()
                out += [probs[i, :n] for i, n in enumerate(batch["lengths"].cpu().tolist())]
        return np.concatenate(out) if out else np.zeros(0)

    def predict_proba(self, data: HeadData) -> np.ndarray:
        per_slice = self.slice_probabilities(data)
        offsets = data.blocks[SLICE_LABELS].offsets
        study = np.array([per_slice[a:b].max() if b > a else np.nan for a, b in itertools.pairwise(offsets)])
        return study[:, None]

    def write_extras(self, data: HeadData, out_dir: Path) -> None:
        labels = data.blocks[SLICE_LABELS]
        sample = np.repeat(np.arange(len(data)), labels.lengths)
        starts = np.repeat(labels.offsets[:-1], labels.lengths)
        y = labels.values[:, 0].astype(float)
        frame = pd.DataFrame({
            "sample_id": data.table["sample_id"].to_numpy()[sample], "slice": np.arange(len(sample)) - starts,
            "task": data.meta.get("slice_task", "pe_present_on_image"), "y_true": np.where(y < 0, np.nan, y),
            "y_prob": self.slice_probabilities(data),
        })
        write_contract_csv(frame, out_dir / "slice_predictions.csv")


class _FlattenSlices(nn.Module):
    """B × L × 1 → B × L: the multitask step then treats every slice as one target column."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.inner(batch)[..., 0]
