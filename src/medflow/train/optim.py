"""The optimiser and learning-rate schedule a :class:`~medflow.train.config.TrainConfig` names."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from medflow.train.config import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    if cfg.schedule == "plateau":
        mode = "max" if cfg.monitor == "val_auc" else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.gamma, patience=cfg.plateau_patience
        )
    return None


def step_scheduler(scheduler: Any, metric: float) -> None:
    """Advance ``scheduler`` after an epoch; ``plateau`` watches ``metric`` (larger is better) and
    skips epochs where it is undefined."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if not math.isnan(metric):
            scheduler.step(metric if scheduler.mode == "max" else -metric)
    else:
        scheduler.step()
