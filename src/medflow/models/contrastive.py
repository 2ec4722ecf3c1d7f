"""Contrastive pre-training pieces: SimCLR projection head, NT-Xent and supervised contrastive losses.

Both losses compute in float32 (cosine similarities divided by a small temperature overflow or lose
precision in fp16/bf16) and use log-sum-exp, so they are safe under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """SimCLR projection g(h): Linear-BN-ReLU-Linear (2048 → 512 → 128 by default).

    The loss is applied to g(h); the encoder feature h below it is what is kept downstream.
    """

    def __init__(self, in_dim: int = 2048, hidden: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False),  # BN follows, a bias would be redundant
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _similarities(z: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Cosine-similarity logits / temperature in fp32, and the self-similarity mask (diagonal)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, not {temperature}")
    z = F.normalize(z.float(), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return logits.masked_fill(self_mask, float("-inf")), self_mask


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR NT-Xent: each of the 2B views must pick its partner among the 2B - 1 others.

    ``z1[i]`` and ``z2[i]`` are two views of sample i; the loss is averaged over all 2B anchors.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    logits, _ = _similarities(torch.cat([z1, z2]), temperature)
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(logits.device)
    return F.cross_entropy(logits, partner)


def supcon_loss(z: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out): every same-label view is a positive.

    ``z`` is ``(N, D)`` with all views stacked (N = 2B for two views), ``labels`` is ``(N,)``. Anchors
    with no positive (a label seen once) are left out of the mean; with two views of each sample
    every anchor has one. With one distinct label per sample this equals :func:`nt_xent_loss`.
    """
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"z must be (N, D) and labels (N,), got {tuple(z.shape)} and {tuple(labels.shape)}")
    logits, self_mask = _similarities(z, temperature)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    labels = labels.to(logits.device)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positive.sum(dim=1)
    has_pos = n_pos > 0
    if not has_pos.any():
        raise ValueError("supcon_loss: no anchor has a positive (every label occurs once)")
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()
