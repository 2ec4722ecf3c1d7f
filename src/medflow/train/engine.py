"""The training engine shared by every neural stage.

Built on torch's own facilities — ``torch.amp`` (autocast + GradScaler), ``torch.save`` checkpoints,
``DistributedDataParallel`` — rather than a framework: they are what any of those frameworks wraps,
they add no dependency that has to agree with our pinned torch, and the checkpoint stays a plain
dict a user can open. What a run leaves in ``out_dir`` (history, TensorBoard curves, checkpoints,
``model.pt``) is :mod:`medflow.train.outputs`.

Reproducibility: each epoch reseeds torch's global RNG and the loaders from (seed, epoch), so
epoch k computes the same thing whether or not the run was interrupted before it; on the CPU two
runs give identical weights.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medflow.data.loader import epoch_seed, set_epoch
from medflow.logs import progress_bar
from medflow.train import outputs
from medflow.train.config import TrainConfig
from medflow.train.optim import build_optimizer, build_scheduler, step_scheduler

log = logging.getLogger(__name__)


@dataclass
class StepOutput:
    """What one batch gives the engine: the loss to minimise and, for validation metrics, the
    per-sample scores (logits) and targets (NaN targets are ignored)."""

    loss: torch.Tensor
    scores: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    count: int = 0


StepFn = Callable[[nn.Module, dict[str, Any], torch.device], StepOutput]


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Move the batch's tensors (also inside lists, as heads with several inputs have) to ``device``."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
            return value
        if isinstance(value, list | tuple):
            return type(value)(move(v) for v in value)
        return value

    return {key: move(value) for key, value in batch.items()}


def bce_step(pos_weight: float | None = None) -> StepFn:
    """Binary cross-entropy on the first logit against ``batch['y']``; samples with NaN labels are skipped."""

    def step(model: nn.Module, batch: dict[str, Any], device: torch.device) -> StepOutput:
        logits = model(batch["x"]).float()[:, 0]
        y = batch["y"].float()
        known = ~torch.isnan(y)
        weight = None if pos_weight is None else torch.tensor(pos_weight, device=logits.device)
        if known.any():
            loss = nn.functional.binary_cross_entropy_with_logits(logits[known], y[known], pos_weight=weight)
        else:
            loss = logits.sum() * 0.0
        return StepOutput(loss, logits.detach(), y, int(known.sum()))

    return step


def auto_pos_weight(labels: Iterable[float]) -> float | None:
    """n_negative / n_positive of the training labels (None when a class is absent)."""
    y = np.asarray([v for v in labels if not math.isnan(float(v))], dtype=float)
    positives = float((y == 1).sum())
    negatives = float((y == 0).sum())
    if positives == 0 or negatives == 0:
        return None
    return negatives / positives


def roc_auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC ignoring NaN targets; NaN when the targets hold a single class."""
    from sklearn.metrics import roc_auc_score

    known = ~np.isnan(targets)
    targets, scores = targets[known], scores[known]
    if len(np.unique(targets)) < 2:
        return float("nan")
    return float(roc_auc_score(targets, scores))


def autocast_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """The autocast dtype for ``device``: none on CPU, bf16 where the GPU has it, else fp16."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class FitResult:
    best_epoch: int
    best_metric: float
    monitor: str
    history: pd.DataFrame
    resumed_from: int = 0  # epochs already done when this run started
    epochs_run: list[int] = field(default_factory=list)


class Trainer:
    """Fit ``model`` with ``step`` on the training loader; select and stop on the validation loader.

    ``fingerprint`` identifies what is being trained (model, data, config): a checkpoint with
    another fingerprint is never resumed. ``rank``/``world_size`` > 1 run one replica of a
    DistributedDataParallel job; only rank 0 writes files. ``unused_parameters``: some trainable
    parameters take no part in the loss (a network's classifier during contrastive pre-training),
    which DDP must be told, at the cost of a graph walk per step.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        device: torch.device,
        step: StepFn,
        fingerprint: str,
        metadata: dict[str, Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
        progress: bool = True,
        unused_parameters: bool = False,
    ) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.device = device
        self.step = step
        self.fingerprint = fingerprint
        self.metadata = dict(metadata or {})
        self.rank, self.world_size = rank, world_size
        self.progress = progress and rank == 0
        self.amp_dtype = autocast_dtype(device, cfg.amp)
        self.channels_last = device.type == "cuda"
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.replica = model
        if world_size > 1:
            if device.type == "cuda":  # small per-GPU batches: BatchNorm statistics over all ranks
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # (gloo has no SyncBatchNorm)
                self.model = model
            self.replica = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=unused_parameters,
            )
        self.optimizer = build_optimizer(model.parameters(), cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # --------------------------------------------------------------------------------- paths

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / outputs.CHECKPOINT_DIR

    @property
    def model_path(self) -> Path:
        return self.out_dir / outputs.MODEL_FILE

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ---------------------------------------------------------------------------- checkpoints

    def _save_checkpoint(self, state: dict[str, Any], best_state: dict[str, Any] | None) -> None:
        if self.rank == 0:
            outputs.save_checkpoint(self.checkpoint_dir, state, best_state)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        state = outputs.load_checkpoint(self.checkpoint_dir, self.device, self.fingerprint)
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        return state

    # ------------------------------------------------------------------------------- the loop

    def fit(self, train_loader: Any, val_loader: Any) -> FitResult:
        cfg = self.cfg
        state = self._load_checkpoint()
        start = 0
        history: list[dict[str, Any]] = []
        best_metric, best_epoch, bad_epochs, best_loss = -math.inf, -1, 0, math.inf
        monitor = cfg.monitor
        if state is not None:
            start = int(state["epoch"]) + 1
            history = list(state["history"])
            best_metric, best_epoch = float(state["best_metric"]), int(state["best_epoch"])
            bad_epochs, monitor = int(state["bad_epochs"]), state["monitor"]
            best_loss = float(state.get("best_loss", math.inf))
            log.info("resuming from the checkpoint of epoch %d (best %s %.4f at epoch %d)",
                     start - 1, monitor, self._shown(best_metric, monitor), best_epoch)
        writer = outputs.tensorboard_writer(self.out_dir, purge_step=start) if self.rank == 0 else None
        done_early = bool(state is not None and state.get("stopped"))
        epochs_run: list[int] = []
        epochs_bar = progress_bar(total=cfg.epochs, initial=start, desc="epochs", unit="epoch",
                                  disable=not self.progress)
        try:
            for epoch in range(start, cfg.epochs):
                if done_early:
                    break
                seed_everything(epoch_seed(cfg.seed, epoch))
                set_epoch(train_loader, epoch)
                train = self._train_epoch(train_loader, epoch)
                if cfg.bn_recalibrate:
                    self._recalibrate_batchnorm(train_loader, cfg.bn_recalibrate)
                val_loss, val_auc = self._validate(val_loader)
                if epoch == 0 and monitor == "val_auc" and math.isnan(val_auc):
                    log.warning("the validation split holds a single class: AUC is undefined, "
                                "so the best epoch is chosen on validation loss instead")
                    monitor = "val_loss"
                metric = val_auc if monitor == "val_auc" else -val_loss
                lr = self.optimizer.param_groups[0]["lr"]
                step_scheduler(self.scheduler, metric)
                row = {"epoch": epoch, "train_loss": train["loss"], "val_loss": val_loss, "val_auc": val_auc,
                       "lr": lr, "seconds": train["seconds"], "data_wait_share": train["wait_share"],
                       "images_per_second": train["rate"]}
                history.append(row)
                if self.rank == 0:
                    outputs.log_epoch(writer, row)
                # A small validation split's AUC saturates (1.0 from an early, undertrained epoch on):
                # a tie goes to the epoch with the lower validation loss.
                tie = monitor == "val_auc" and metric == best_metric and val_loss < best_loss
                improved = not math.isnan(metric) and (metric > best_metric or tie)
                best_state = None
                if improved:
                    best_metric, best_epoch, bad_epochs, best_loss = metric, epoch, 0, val_loss
                    best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                else:
                    bad_epochs += 1
                stop = bool(cfg.early_stopping) and bad_epochs >= cfg.early_stopping
                self._save_checkpoint(
                    {"epoch": epoch, "fingerprint": self.fingerprint, "model": self.model.state_dict(),
                     "optimizer": self.optimizer.state_dict(),
                     "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict(), "history": history, "best_metric": best_metric,
                     "best_epoch": best_epoch, "bad_epochs": bad_epochs, "monitor": monitor, "stopped": stop,
                     "best_loss": best_loss},
                    best_state,
                )
                epochs_run.append(epoch)
                epochs_bar.update(1)
                if stop:
                    log.info("early stopping after epoch %d: no better %s for %d epochs", epoch, monitor, bad_epochs)
                    break
        finally:
            epochs_bar.close()
            if writer is not None:
                writer.close()
        frame = pd.DataFrame(history, columns=list(outputs.HISTORY_COLUMNS))
        if self.rank == 0:
            self._finish(frame, best_epoch, best_metric, monitor)
        return FitResult(best_epoch, self._shown(best_metric, monitor), monitor, frame, start, epochs_run)

    @staticmethod
    def _shown(metric: float, monitor: str) -> float:
        return -metric if monitor == "val_loss" else metric

    def _train_epoch(self, loader: Any, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.replica.train()
        total = cfg.max_steps or len(loader)
        bar = progress_bar(total=min(total, len(loader)), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                           disable=not self.progress)
        loss_sum = torch.zeros((), device=self.device)
        count, images, wait = 0, 0, 0.0
        t_start = t_ready = time.perf_counter()
        for i, batch in enumerate(loader):
            wait += time.perf_counter() - t_ready
            batch = to_device(batch, self.device, self.channels_last)
            with self._autocast():
                out = self.step(self.replica, batch, self.device)
            self.scaler.scale(out.loss).backward()
            if cfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            n = out.count or len(next(iter(v for v in batch.values() if isinstance(v, torch.Tensor))))
            loss_sum += out.loss.detach().float() * n
            count += n
            images += len(batch["x"]) if "x" in batch else n
            bar.update(1)
            t_ready = time.perf_counter()
            if cfg.max_steps and i + 1 >= cfg.max_steps:
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t_start
        bar.close()
        if self.world_size > 1:  # the epoch's loss over every rank's share, as one process would report it
            totals = torch.stack([loss_sum.double(), torch.tensor(float(count), device=self.device).double()])
            torch.distributed.all_reduce(totals)
            loss_sum, count = totals[0], int(totals[1].item())
        return {
            "loss": float(loss_sum.item() / max(count, 1)),
            "seconds": seconds,
            "wait_share": wait / seconds if seconds > 0 else 0.0,
            "rate": images * self.world_size / seconds if seconds > 0 else 0.0,
        }

    @torch.no_grad()
    def _recalibrate_batchnorm(self, loader: Any, batches: int) -> None:
        """Recompute the running statistics of trainable BatchNorm layers (a frozen encoder's stay
        as they are) as the plain average over ``batches`` training batches, with these weights."""
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        layers = [m for m in norms if m.weight is not None and m.weight.requires_grad]
        if not layers:
            return
        saved = [(m, m.momentum, m.training) for m in norms]
        for m in norms:
            m.eval()  # frozen layers keep their statistics
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
            m.train()
        try:
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                batch = to_device(batch, self.device, self.channels_last)
                with self._autocast():
                    self.step(self.model, batch, self.device)
        finally:
            for m, momentum, training in saved:
                m.momentum = momentum
                m.train(training)

    @torch.inference_mode()
    def _validate(self, loader: Any) -> tuple[float, float]:
        if loader is None or len(loader) == 0:
            return float("nan"), float("nan")
        self.model.eval()
        loss_sum, count = 0.0, 0
        scores: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        for batch in loader:
            batch = to_device(batch, self.device, self.channels_last)
            with self._autocast():
                out = self.step(self.model, batch, self.device)
            n = out.count or len(batch["x"])
            loss_sum += float(out.loss.float()) * n
            count += n
            if out.scores is not None and out.targets is not None:
                scores.append(out.scores.float().cpu().numpy())
                targets.append(out.targets.float().cpu().numpy())
        auc = roc_auc(np.concatenate(targets), np.concatenate(scores)) if scores else float("nan")
        return loss_sum / max(count, 1), auc

    def _finish(self, history: pd.DataFrame, best_epoch: int, best_metric: float, monitor: str) -> None:
        """model.pt (best weights + metadata) and history.csv, atomically; then drop the checkpoint."""
        weights = outputs.best_weights(self.checkpoint_dir)
        if weights is None:  # no epoch improved on a defined metric: keep the last weights, and say so
            log.warning("no epoch had a defined %s: model.pt holds the last epoch's weights", monitor)
            weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        payload = {
            "state_dict": weights,
            "best_epoch": best_epoch,
            "best_metric": self._shown(best_metric, monitor),
            "monitor": monitor,
            "train": self.cfg.as_dict(),
            "fingerprint": self.fingerprint,
            **self.metadata,
        }
        outputs.write_model(self.out_dir, payload, history, self.checkpoint_dir)
        log.info("best epoch %d (%s %.4f); wrote %s", best_epoch, monitor, self._shown(best_metric, monitor),
                 self.model_path)
