"""DSAF — the attention fusion head of the CLNM study, in two variants.

``published`` keeps the published structure: a self-attention block applied to each modality's
feature as a sequence of *one* token, modality features cross-added with modality weights,
concatenation, a second attention, and an MLP (→ 512 → output). Two corrections: the modality
weights are real ``nn.Parameter``\\ s (the published ones were plain tensors the optimiser never saw,
left on the CPU), and the output is one logit per task trained with BCE (equivalent to the
published 2-way softmax). What stays faithful, and is worth knowing: attention over a single
token is an identity on the value projection (softmax of a 1×1 score is 1), so each "attention"
block is in effect one linear layer and its query/key weights never receive a gradient.

``tokens`` is medflow's variant: each modality (image features, clinical vector) becomes a token
of a common width, a transformer layer attends *across* the modality tokens — with two or more
tokens the attention weights depend on the inputs, so it is not an identity — and learned,
input-dependent gates weigh the tokens before the classifier.

``width`` projects each modality to that size first (a linear layer per modality). ``None`` keeps
the published full widths (2048-d image features: DSAF-3 then has ~180 M parameters, which is why
the CPU demo sets a width).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medflow.heads.inputs import FeatureScaler, HeadData, Ragged
from medflow.heads.neural import NeuralHead
from medflow.heads.tabular import TableEncoder

CLINICAL = "clinical (encoded)"  # the table input after the TableEncoder (see DSAFHead.encode)


class SelfAttention(nn.Module):
    """Scaled dot-product self-attention with Q, K, V projections (dim → dim), over B × L × dim."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.softmax(self.query(x) @ self.key(x).transpose(1, 2) * self.scale, dim=-1)
        return scores @ self.value(x)


class CrossAdd(nn.Module):
    """The published two-modality block: one shared attention, each modality plus the other one
    weighted (x1 = SA(x) + w2·y, y1 = SA(y) + w1·x), concatenated, then a second attention."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shared = SelfAttention(dim)
        self.w1 = nn.Parameter(torch.ones(()))
        self.w2 = nn.Parameter(torch.ones(()))
        self.fused = SelfAttention(2 * dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x1 = self.shared(x) + self.w2 * y
        y1 = self.shared(y) + self.w1 * x
        return self.fused(torch.cat([x1, y1], dim=-1))


class WeightedConcat(nn.Module):
    """The published block for inputs of different sizes: attention on each, scaled by a modality
    weight, concatenated, then attention over the concatenation."""

    def __init__(self, dim_a: int, dim_b: int) -> None:
        super().__init__()
        self.attend_a, self.attend_b = SelfAttention(dim_a), SelfAttention(dim_b)
        self.w1 = nn.Parameter(torch.ones(()))
        self.w2 = nn.Parameter(torch.ones(()))
        self.fused = SelfAttention(dim_a + dim_b)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fused(torch.cat([self.w1 * self.attend_a(a), self.w2 * self.attend_b(b)], dim=-1))


class DSAFPublished(nn.Module):
    """DSAF-2 (tumour, fat) or DSAF-3 (+ clinical) with the published wiring."""

    def __init__(self, image_dims: Sequence[int], clinical_dim: int | None, n_out: int, width: int | None) -> None:
        super().__init__()
        if len(image_dims) != 2:
            raise ValueError(f"DSAF fuses exactly two image feature inputs (tumour, fat), not {len(image_dims)}")
        if width is None and image_dims[0] != image_dims[1]:
            raise ValueError(f"image features of sizes {list(image_dims)} differ: set `width` to project them")
        dim = width or image_dims[0]
        self.project = nn.ModuleList(nn.Identity() if width is None else nn.Linear(d, dim) for d in image_dims)
        self.images = CrossAdd(dim)
        self.clinical_dim = clinical_dim
        if clinical_dim is None:
            fused = 2 * dim
        else:
            self.clinical_tumour = WeightedConcat(clinical_dim, dim)  # CA1
            self.all = WeightedConcat(clinical_dim + dim, 2 * dim)  # CA3 on (CA1, CA2)
            fused = 3 * dim + clinical_dim
        self.fc1 = nn.Linear(fused, 512)
        self.fc2 = nn.Linear(512, n_out)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tumour, fat = (p(x)[:, None, :] for p, x in zip(self.project, batch["images"], strict=True))
        fused = self.images(tumour, fat)
        if self.clinical_dim is not None:
            clinical = batch["clinical"][:, None, :]
            fused = self.all(self.clinical_tumour(clinical, tumour), fused)
        return self.fc2(torch.relu(self.fc1(fused.flatten(1))))


class DSAFTokens(nn.Module):
    """Modality tokens, attention across them, learned gates, classifier."""

    def __init__(self, dims: Sequence[int], n_out: int, width: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.ModuleList(
            nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width)) for d in dims
        )
        self.modality = nn.Parameter(torch.zeros(len(dims), width))
        nn.init.normal_(self.modality, std=0.02)
        heads = 4 if width % 4 == 0 else 1
        self.mix = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=dropout,
                                              batch_first=True, norm_first=True)
        self.gate = nn.Linear(width, 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, n_out))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = torch.stack([e(x) for e, x in zip(self.embed, batch["tokens"], strict=True)], dim=1)
        tokens = self.mix(tokens + self.modality)
        gates = torch.softmax(self.gate(tokens), dim=1)  # B × M × 1: how much each modality counts
        return self.head((gates * tokens).sum(dim=1))


class DSAFHead(NeuralHead):
    """Fit/predict wrapper: image feature inputs in config order, z-scored, and a table input
    (clinical) encoded, both with statistics of the training split (z-score, one-hot)."""

    default_train: Mapping[str, Any] = {"epochs": 60, "batch_size": 16, "optimizer": "adam", "lr": 1e-3,
                                        "weight_decay": 1e-2, "schedule": "step", "step_size": 50, "gamma": 0.5,
                                        "workers": 0, "early_stopping": 20}  # fmt: skip

    def prepare(self, train: HeadData) -> None:
        self.tables_ = [n for n in self.inputs if isinstance(train.blocks[n], pd.DataFrame)]
        self.images_ = [n for n in self.inputs if n not in self.tables_]
        if len(self.tables_) > 1:
            raise ValueError(f"DSAF takes one clinical table, not {self.tables_}")
        for name in self.images_:
            if isinstance(train.blocks[name], Ragged):
                raise ValueError(f"DSAF input {name!r} is a sequence; it needs one feature vector per sample")
        self.encoder_ = TableEncoder().fit(train.blocks[self.tables_[0]]) if self.tables_ else None
        self.scalers_ = {name: FeatureScaler().fit(train.blocks[name]) for name in self.images_}

    def build(self, train: HeadData) -> nn.Module:
        dims = [int(np.asarray(train.blocks[n]).shape[1]) for n in self.images_]
        clinical = len(self.encoder_.feature_names) if self.encoder_ is not None else None
        width, n_out = self.spec.get("width"), len(self.tasks)
        if self.spec.get("variant", "published") == "tokens":
            return DSAFTokens(dims + ([clinical] if clinical else []), n_out, width or 128,
                              float(self.spec.get("dropout", 0.1)))
        return DSAFPublished(dims, clinical, n_out, width)

    def encode(self, data: HeadData) -> HeadData:
        blocks = {name: scaler.transform(data.blocks[name]) for name, scaler in self.scalers_.items()}
        if self.encoder_ is not None:
            blocks[CLINICAL] = self.encoder_.transform(data.blocks[self.tables_[0]])
        return data.with_blocks(**blocks)

    def collate(self, data: HeadData, index: list[int]) -> dict[str, Any]:
        images = [torch.as_tensor(np.asarray(data.blocks[n])[index], dtype=torch.float32) for n in self.images_]
        batch: dict[str, Any] = {"images": images, "tokens": list(images)}
        if self.encoder_ is not None:
            clinical = torch.as_tensor(data.blocks[CLINICAL][index])
            batch["clinical"] = clinical
            batch["tokens"].append(clinical)
        return batch
