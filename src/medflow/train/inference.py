"""Inference with a trained network: probabilities for predictions.csv and feature vectors for
stage 2 (written with :mod:`medflow.io.features`, keyed by ``sample_id``, never by row order)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from medflow.logs import progress_bar
from medflow.train.engine import autocast_dtype, to_device


@torch.inference_mode()
def run_inference(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    desc: str = "inference",
    progress: bool = True,
    key: str | None = "x",
) -> np.ndarray:
    """``fn(model, batch[key])`` over every batch of ``loader`` (in loader order) as one float32
    array; ``key=None`` passes the whole batch dict (heads with several inputs)."""
    model.eval()
    dtype = autocast_dtype(device, "auto")
    channels_last = device.type == "cuda"
    out: list[np.ndarray] = []
    for batch in progress_bar(loader, desc=desc, unit="batch", disable=not progress):
        moved = to_device(batch, device, channels_last)
        x = moved if key is None else moved[key]
        if dtype is None:
            values = fn(model, x)
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                values = fn(model, x)
        out.append(values.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)


def probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(model(x).float()[:, 0])


def feature_vectors(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.features(x)
