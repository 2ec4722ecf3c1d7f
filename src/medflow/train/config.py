"""Training hyper-parameters: one dataclass filled from a model's ``train:`` block in the config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "step", "cosine", "plateau")
MONITORS = ("val_auc", "val_loss")
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class TrainConfig:
    """Everything that decides how a model is fitted (and so is part of its checkpoint fingerprint).

    ``pos_weight``: ``"auto"`` weighs positives by n_negative / n_positive of the *training* labels,
    a number fixes it, ``None`` turns it off. ``early_stopping``: epochs without improvement of
    ``monitor`` on the validation split before stopping (0 = never). ``max_steps``: cap on batches
    per epoch (for smoke runs and benchmarks; 0 = the whole epoch). ``bn_recalibrate``: after each
    epoch, re-estimate the BatchNorm statistics of the trainable layers from this many training
    batches with the epoch's final weights (0 = off). Short trainings need it: running statistics
    averaged over the first few hundred steps describe networks that no longer exist, and eval-mode
    outputs then collapse to one value or explode.
    """

    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    step_size: int = 10
    gamma: float = 0.1
    plateau_patience: int = 2
    pos_weight: float | str | None = "auto"
    early_stopping: int = 0
    monitor: str = "val_auc"
    amp: str = "auto"
    grad_clip: float = 0.0
    workers: int | None = None  # None: devices.loader_workers decides from the device and the job's threads
    seed: int = 0
    max_steps: int = 0
    bn_recalibrate: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("monitor", MONITORS),
            ("amp", AMP_MODES),
        )
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name} = {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if isinstance(self.pos_weight, str) and self.pos_weight != "auto":
            raise ValueError(f"train.pos_weight = {self.pos_weight!r}: use 'auto', a number or null")
        if self.bn_recalibrate < 0:
            raise ValueError(f"train.bn_recalibrate must be >= 0, not {self.bn_recalibrate}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, not {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> TrainConfig:
        """Known keys become fields; unknown keys are an error naming them and the allowed ones."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown train key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
