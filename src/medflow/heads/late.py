"""Late fusion: the mean of other heads' probabilities (the EHR study's ``late`` mode). The
published code averaged logits inside one network trained end to end; here each modality's model
is the unimodal head, fitted on its own, and nothing more is trained."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medflow.heads.inputs import HeadData


class LateFusionHead:
    """The mean of the unimodal heads' probabilities; nothing to fit."""

    def __init__(self, spec: Mapping[str, Any], tasks: list[str]) -> None:
        self.inputs = list(spec["inputs"])
        self.tasks = tasks

    def fit(self, train: HeadData, val: HeadData, out_dir: Path, device: Any = None) -> LateFusionHead:
        return self

    def predict_proba(self, data: HeadData) -> np.ndarray:
        return np.mean([np.asarray(data.blocks[n], dtype=np.float64) for n in self.inputs], axis=0)

    def save(self, out_dir: Path) -> dict[str, Any]:
        return {"model_file": None, "combines": self.inputs}
