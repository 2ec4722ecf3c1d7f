"""Grad-CAM overlays of a few held-out samples for an image model's report: where in the image the
network's evidence for the positive class sits. The gradient of the logit with respect to the last
spatial feature map of the encoder, averaged over space, weighs that map's channels (Selvaraju et
al., 2017); the result is upsampled to the input and drawn over it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from medflow.report.figures import to_data_uri

log = logging.getLogger(__name__)


def grad_cam(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Class-activation maps (B × spatial of ``x``, each scaled to [0, 1]) for the first logit."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        spatial_map = isinstance(output, torch.Tensor) and output.ndim == x.ndim and output.shape[2:].numel() > 1
        if spatial_map and output.requires_grad:  # the pooled (B, C, 1, 1) output is not a map
            captured["activation"] = output  # the last one seen in forward order wins

    leaves = [m for m in model.encoder.modules() if not list(m.children())]
    handles = [m.register_forward_hook(keep) for m in leaves]
    try:
        model.eval()
        x = x.clone().requires_grad_(True)  # gradients reach a frozen encoder's maps through the input
        model.zero_grad(set_to_none=True)
        logits = model(x)[:, 0]
        captured["activation"].register_hook(lambda grad: captured.__setitem__("gradient", grad))
        logits.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    activation, gradient = captured["activation"].detach(), captured["gradient"].detach()
    spatial = tuple(range(2, activation.ndim))
    weights = gradient.mean(dim=spatial, keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True))
    mode = "trilinear" if cam.ndim == 5 else "bilinear"
    cam = nn.functional.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)[:, 0]
    flat = cam.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scaled = (flat - low[:, None]) / (high - low).clamp(min=1e-8)[:, None]
    return scaled.view_as(cam).numpy()


def pick_samples(predictions: pd.DataFrame, n: int = 4) -> pd.DataFrame:
    """Held-out samples: the most confident true positives and true negatives (test, else external)."""
    for split in ("test", "external", "val"):
        rows = predictions[(predictions["split"] == split) & predictions["y_true"].notna()]
        if rows["y_true"].nunique() == 2:
            positives = rows[rows["y_true"] == 1].nlargest(n // 2, "y_prob")
            negatives = rows[rows["y_true"] == 0].nsmallest(n - len(positives), "y_prob")
            return pd.concat([positives, negatives])
    return predictions.iloc[0:0]


def gradcam_figure(
    spec: Mapping[str, Any], *, ingest: str | Path, splits: str | Path, manifest: str | Path, model_path: str | Path,
    label: str, predictions: pd.DataFrame, n: int = 4,
) -> str | None:
    """One figure of ``n`` overlays (middle slice of a volume's map peak; the top-scoring slice of a
    slice stack), or None when there is nothing to show."""
    from medflow.train.stage1 import load_data, load_trained, make_dataset

    chosen = pick_samples(predictions[predictions["task"] == label], n)
    if chosen.empty:
        return None
    data = load_data(ingest, splits, manifest, label)
    rows = data.table.set_index("sample_id").loc[chosen["sample_id"]].reset_index()
    model = load_trained(data, dict(spec), model_path)
    dataset = make_dataset(data, rows, dict(spec), augment=False)
    if data.kind == "slices":
        # the slice the model scores highest in each chosen study
        items = []
        for k in range(len(rows)):
            own = [i for i in range(len(dataset)) if int(dataset.slice_sample[i]) == k]
            with torch.no_grad():
                batch = torch.stack([dataset[i]["x"] for i in own])
                scores = model.eval()(batch)[:, 0]
            items.append(dataset[own[int(scores.argmax())]]["x"])
        x = torch.stack(items)
    else:
        x = torch.stack([dataset[i]["x"] for i in range(len(dataset))])
    cams = grad_cam(model, x)
    fig, axes = plt.subplots(1, len(x), figsize=(2.6 * len(x), 2.9))
    for ax, image, cam, (_, row) in zip(np.atleast_1d(axes), x.numpy(), cams, chosen.iterrows(), strict=True):
        picture = image[0]
        if picture.ndim == 3:  # volume: the slice where the map peaks
            depth = int(np.unravel_index(cam.argmax(), cam.shape)[0])
            picture, cam = picture[depth], cam[depth]
        ax.imshow(picture, cmap="gray")
        ax.imshow(cam, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        ax.set_title(f"y={int(row['y_true'])}  p={row['y_prob']:.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("Grad-CAM (held-out samples; red = evidence for the positive class)", fontsize=9)
    return to_data_uri(fig)
