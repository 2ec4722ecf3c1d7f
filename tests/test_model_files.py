"""Model files and checkpoints are data: loading one never runs code pickled into it.

Anyone who can write to ``results/`` could otherwise swap a ``model.pt`` or ``checkpoint/last.pt``
for a pickle whose ``__reduce__`` runs a command in the next job that reads it. Each test plants
such a file (it would create a marker file) where a loader looks, and checks that the loader
refuses it and the marker never appears.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

from medflow.heads.inputs import HeadData
from medflow.heads.neural import NeuralHead
from medflow.train import engine, stage1
from medflow.train.config import TrainConfig
from medflow.train.engine import Trainer, bce_step


class Plant:
    """Unpickling this creates ``marker``: a stand-in for any command an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def plant(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus a :class:`Plant` to ``path``; return the marker it would create."""
    marker = path.parent / f"{path.name}.code-ran"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**payload, "extra": Plant(marker)}, path)
    return marker


def test_the_planted_payload_runs_code_when_unpickled_unrestricted(tmp_path: Path) -> None:
    """The control: without weights_only the planted file does run its code, so the tests below
    would catch a loader that unpickles freely."""
    marker = plant(tmp_path / "model.pt", {"state_dict": {}})
    torch.load(tmp_path / "model.pt", weights_only=False)
    assert marker.exists()


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = (self.x[:, 0] > 0).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def test_trainer_refuses_a_checkpoint_that_carries_code(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = TrainConfig(epochs=1, batch_size=8, schedule="none", workers=0, pos_weight=None, amp="off")
    model = nn.Linear(4, 1)
    trainer = Trainer(model, cfg, tmp_path, device=torch.device("cpu"), step=bce_step(), fingerprint="fp",
                      progress=False)
    # a checkpoint that would otherwise be resumed: same fingerprint, every field in place
    marker = plant(trainer.checkpoint_dir / "last.pt", {
        "epoch": 0, "fingerprint": "fp", "model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
        "scheduler": None, "scaler": trainer.scaler.state_dict(), "history": [], "best_metric": 0.0,
        "best_epoch": 0, "bad_epochs": 0, "monitor": "val_auc", "stopped": False,
    })
    loader = torch.utils.data.DataLoader(_Items(16), batch_size=8)
    with caplog.at_level(logging.WARNING, engine.__name__):
        result = trainer.fit(loader, loader)
    assert not marker.exists()
    assert result.resumed_from == 0 and result.epochs_run == [0]
    assert "cannot read checkpoint" in caplog.text


@pytest.fixture
def stage1_data(tmp_path: Path) -> stage1.Stage1Data:
    return stage1.Stage1Data(path=tmp_path / "img.h5", kind="patches", channels=1, has_mask=False, window=None,
                             table=pd.DataFrame(), slice_task=None, source_hash="")


def test_load_trained_refuses_a_model_file_that_carries_code(tmp_path: Path, stage1_data: stage1.Stage1Data) -> None:
    spec = {"model": "convnet"}
    weights = stage1.build_network(stage1_data, spec).state_dict()
    marker = plant(tmp_path / "model.pt", {"state_dict": weights})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        stage1.load_trained(stage1_data, spec, tmp_path / "model.pt")
    assert not marker.exists()


def test_encoder_loading_refuses_a_model_file_that_carries_code(
    tmp_path: Path, stage1_data: stage1.Stage1Data
) -> None:
    spec = {"model": "convnet"}
    encoder = stage1.Contrastive(stage1.build_network(stage1_data, spec)).state_dict()
    marker = plant(tmp_path / "pretrain.pt", {"state_dict": encoder})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        stage1.build_network(stage1_data, spec, encoder=tmp_path / "pretrain.pt")
    assert not marker.exists()


class _Head(NeuralHead):
    def build(self, train: HeadData) -> nn.Module:
        return nn.Linear(1, 1)


def test_neural_head_refuses_a_model_file_that_carries_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head reads back the model.pt its training wrote; one swapped in meanwhile must not run."""
    markers: list[Path] = []

    class PlantingTrainer:
        def __init__(self, model: nn.Module, cfg: TrainConfig, out_dir: Path, **kwargs: Any) -> None:
            self.model, self.model_path = model, Path(out_dir) / "model.pt"

        def fit(self, *loaders: Any) -> None:
            markers.append(plant(self.model_path, {"state_dict": self.model.state_dict()}))

    monkeypatch.setattr("medflow.heads.neural.Trainer", PlantingTrainer)
    table = pd.DataFrame({"sample_id": ["a", "b"], "y": [0.0, 1.0]})
    data = HeadData(table, {}, ["y"])
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        _Head({"inputs": []}, ["y"]).fit(data, data, tmp_path, None)
    assert markers and not markers[0].exists()
