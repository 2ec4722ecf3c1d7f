"""What a training run (:class:`medflow.train.engine.Trainer`) leaves in its ``out_dir``:

- ``history.csv`` — one row per epoch: train/val loss, val AUC, learning rate, seconds, data wait;
- ``tensorboard/`` — the same curves as TensorBoard event files;
- ``model.pt`` — the weights of the best epoch (on the *validation* split only) plus metadata,
  written atomically when training ends, so its presence means the run finished;
- ``checkpoint/last.pt`` and ``checkpoint/best.pt`` while training runs: the last epoch's model,
  optimizer, scheduler, scaler and RNG states, and the best weights so far. A rerun after a crash
  resumes from them (when the fingerprint of model and config matches); they are removed once
  ``model.pt`` is written. They are deliberately not Snakemake outputs: Snakemake deletes a job's
  outputs before running it again, which would throw the progress away.

Checkpoints and ``model.pt`` hold only tensors and plain Python values, and are read with
``torch.load(weights_only=True)``: they lie in ``results/``, and unrestricted unpickling would run
whatever code anyone able to write there had pickled into them.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medflow.io.atomic import atomic_path

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CHECKPOINT_DIR = "checkpoint"
HISTORY_COLUMNS = (
    "epoch", "train_loss", "val_loss", "val_auc", "lr", "seconds", "data_wait_share", "images_per_second",
)  # fmt: skip


def save_checkpoint(folder: Path, state: dict[str, Any], best_state: dict[str, Any] | None) -> None:
    """``last.pt`` (and ``best.pt`` when the epoch improved), each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    if best_state is not None:
        with atomic_path(folder / "best.pt") as tmp:
            torch.save(best_state, tmp)
    with atomic_path(folder / "last.pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(folder: Path, device: torch.device, fingerprint: str) -> dict[str, Any] | None:
    """``last.pt`` when there is one, it can be read and it was made for ``fingerprint``; else None."""
    path = folder / "last.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a checkpoint that cannot be read is not worth failing over
        log.warning("cannot read checkpoint %s (%s): training starts over", path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s was made for another model/config: training starts over", path)
        return None
    return state


def best_weights(folder: Path) -> dict[str, torch.Tensor] | None:
    """The weights of the best epoch so far (``best.pt``), or None when no epoch improved."""
    path = folder / "best.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def write_model(out_dir: Path, payload: dict[str, Any], history: pd.DataFrame, folder: Path) -> None:
    """history.csv and ``model.pt`` (``payload``), atomically; then the checkpoint ``folder`` goes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        torch.save(payload, tmp)
    shutil.rmtree(folder, ignore_errors=True)


def tensorboard_writer(out_dir: Path, purge_step: int) -> Any:
    """A TensorBoard writer on ``out_dir/tensorboard``; events a crashed run logged from ``purge_step``
    (the epoch the run resumes from) on are dropped."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge_step)


def log_epoch(writer: Any, row: dict[str, Any]) -> None:
    """One epoch's row of history.csv to the log and to TensorBoard (``writer`` may be None)."""
    log.info(
        "epoch %d: train loss %.4f, val loss %.4f, val AUC %.4f, lr %.2e, %.1f s (%.0f images/s, data wait %.0f %%)",
        row["epoch"], row["train_loss"], row["val_loss"], row["val_auc"], row["lr"], row["seconds"],
        row["images_per_second"], 100 * row["data_wait_share"],
    )
    if writer is not None:
        for key in ("train_loss", "val_loss", "val_auc", "lr", "data_wait_share", "images_per_second"):
            if not (isinstance(row[key], float) and math.isnan(row[key])):
                writer.add_scalar(key, row[key], row["epoch"])
        writer.flush()
