"""One wrapper for every stage-1 network: an encoder that yields a feature vector, and a linear head."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Classifier(nn.Module):
    """Encoder + linear head, so training and feature extraction treat every architecture alike.

    ``encoder(x)`` must return ``(B, feature_dim)`` or anything that flattens to it (e.g. a pooled
    ``(B, C, 1, 1)`` map). ``features`` is the vector handed to later stages; ``forward`` gives logits.
    The head is always ``Sequential(Dropout, Linear)`` (p may be 0), so checkpoint keys
    (``head.1.weight``) do not depend on the dropout setting.
    """

    def __init__(
        self, encoder: nn.Module, feature_dim: int, num_outputs: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if feature_dim < 1 or num_outputs < 1:
            raise ValueError(f"feature_dim ({feature_dim}) and num_outputs ({num_outputs}) must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.num_outputs = num_outputs
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_outputs))
        self.norm: nn.Module = nn.Identity()
        self.encoder_frozen = False

    def freeze_encoder(self) -> Classifier:
        """Train the head alone on fixed features: the encoder's weights get no gradient, its
        BatchNorm statistics stay as they are (eval mode whatever ``train()`` says), and its forward
        pass builds no graph. Part of ``forward``, so a DistributedDataParallel wrapper sees it."""
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)
        self.encoder_frozen = True
        self.encoder.eval()
        return self

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def normalise_features(self) -> Classifier:
        """Standardise the features before the head (a linear probe on a frozen encoder): BatchNorm
        without affine parameters and with cumulative statistics. Pre-trained features can have
        any scale; without it the head's logits saturate and its ranking never moves."""
        self.norm = nn.BatchNorm1d(self.feature_dim, affine=False, momentum=None)
        return self

    def features(self, x: Tensor) -> Tensor:
        """Feature vector ``(B, feature_dim)`` used downstream (fusion, classical heads)."""
        if self.encoder_frozen:
            with torch.no_grad():
                return torch.flatten(self.encoder(x), 1)
        return torch.flatten(self.encoder(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_outputs)``."""
        return self.head(self.norm(self.features(x)))
