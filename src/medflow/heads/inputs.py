"""A stage-2 head's inputs, joined on ``sample_id``: feature files, tables, labels and splits.

Every input is looked up by id, never by row order (the published CLNM fusion aligned modality
CSVs by row order). A sample that lacks an input is not silently dropped: it is listed in
:attr:`HeadData.excluded` with the input it lacks, and the head writes that list next to its
predictions so the report can show it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from medflow.io.contracts import read_contract_csv, read_manifest_table
from medflow.io.features import read_features

log = logging.getLogger(__name__)

ID_COLUMNS = ("sample_id", "patient_id", "center", "split")


@dataclass
class Ragged:
    """Variable-length sequences (slices of a CT study, notes of an admission, time bins): the rows
    of sample i are ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray  # S × D
    offsets: np.ndarray  # N + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def item(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def with_values(self, values: np.ndarray) -> Ragged:
        return Ragged(values, self.offsets)

    def take(self, index: Sequence[int] | np.ndarray) -> Ragged:
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        rows = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in index])
            if len(index)
            else np.zeros(0, dtype=np.int64)
        )
        return Ragged(self.values[rows.astype(np.int64)], np.r_[0, np.cumsum(lengths)].astype(np.int64))


Block = np.ndarray | Ragged | pd.DataFrame


def take_block(block: Block, index: np.ndarray) -> Block:
    if isinstance(block, Ragged):
        return block.take(index)
    if isinstance(block, pd.DataFrame):
        return block.iloc[index].reset_index(drop=True)
    return block[index]


@dataclass
class HeadData:
    """Samples that have every input: ``table`` holds ids, split, centre and one float column per
    task (NaN = unknown); ``blocks`` hold each input's rows in ``table`` order."""

    table: pd.DataFrame
    blocks: dict[str, Block]
    tasks: list[str]
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["sample_id", "reason"]))
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    def labels(self) -> np.ndarray:
        """N × tasks float array (NaN where unknown)."""
        return self.table[self.tasks].to_numpy(dtype=np.float64)

    def subset(self, mask: np.ndarray | pd.Series) -> HeadData:
        index = np.flatnonzero(np.asarray(mask, dtype=bool))
        return HeadData(
            self.table.iloc[index].reset_index(drop=True),
            {name: take_block(block, index) for name, block in self.blocks.items()},
            self.tasks,
            self.excluded,
            self.meta,
        )

    def with_blocks(self, **blocks: Block) -> HeadData:
        """The same samples with ``blocks`` added or replaced (rows in ``table`` order)."""
        return HeadData(self.table, {**self.blocks, **blocks}, self.tasks, self.excluded, self.meta)

    def split(self, *names: str) -> HeadData:
        return self.subset(self.table["split"].isin(names))

    @property
    def groups(self) -> np.ndarray:
        return self.table["patient_id"].to_numpy()


def read_feature_block(path: str | Path) -> tuple[list[str], np.ndarray | Ragged]:
    ids, values, offsets = read_features(path)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: sample ids are not unique")
    return ids, values if offsets is None else Ragged(values, offsets)


def read_table_block(path: str | Path, variables: Sequence[str] | None) -> tuple[list[str], pd.DataFrame]:
    frame = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
    if "sample_id" not in frame.columns:
        raise ValueError(f"{path} has no sample_id column")
    frame["sample_id"] = frame["sample_id"].astype(str)
    if frame["sample_id"].duplicated().any():
        raise ValueError(f"{path}: sample ids are not unique, e.g. {frame['sample_id'][frame['sample_id'].duplicated()].iloc[0]}")
    columns = [c for c in frame.columns if c != "sample_id"] if not variables else list(variables)
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise ValueError(f"{path} has no column(s) {', '.join(unknown)}; it has: {', '.join(frame.columns[1:])}")
    return frame["sample_id"].tolist(), frame[columns].reset_index(drop=True)


def read_slice_labels(path: str | Path) -> tuple[list[str], Ragged, str]:
    """Per-slice labels of a slice-stack ingest file (−1 = unknown) as a sequence per sample."""
    with h5py.File(path, "r") as f:
        if "slice_label" not in f:
            raise ValueError(f"{path} has no per-slice labels: give the modality `slice_labels:` in the config")
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["sample_id"][:]]
        labels = f["slice_label"][:].astype(np.float32)[:, None]
        task = str(f["slice_label"].attrs.get("label", "slice_label"))
        return ids, Ragged(labels, f["offsets"][:].astype(np.int64)), task


def sample_table(splits_path: str | Path, manifest_path: str | Path, tasks: Sequence[str]) -> pd.DataFrame:
    """ids, split and centre (splits.csv) with the task labels (manifest), in splits.csv order."""
    splits = read_contract_csv(splits_path)
    manifest = read_manifest_table(manifest_path)
    missing = [t for t in tasks if t not in manifest.columns]
    if missing:
        raise ValueError(f"task(s) {', '.join(missing)} are not columns of {manifest_path}")
    labels = manifest[["sample_id", *tasks]].copy()
    for task in tasks:
        labels[task] = pd.to_numeric(labels[task], errors="raise").astype("float64")
    return splits[list(ID_COLUMNS)].merge(labels, on="sample_id", how="left", validate="one_to_one")


def join_inputs(table: pd.DataFrame, inputs: Mapping[str, tuple[list[str], Block]], tasks: Sequence[str]) -> HeadData:
    """Keep the samples of ``table`` present in every input; record the others and why."""
    keep = np.ones(len(table), dtype=bool)
    reasons: dict[str, list[str]] = {}
    positions: dict[str, np.ndarray] = {}
    ids = table["sample_id"]
    for name, (input_ids, _block) in inputs.items():
        where = pd.Series(np.arange(len(input_ids)), index=pd.Index(input_ids))
        found = ids.map(where)
        absent = found.isna().to_numpy()
        for sid in ids[absent]:
            reasons.setdefault(sid, []).append(f"no {name}")
        keep &= ~absent
        positions[name] = found.to_numpy()
    for name, (input_ids, _block) in inputs.items():
        unknown = len(set(input_ids) - set(ids))
        if unknown:
            log.warning("%s holds %d sample(s) that are not in the splits: ignored", name, unknown)
    excluded = pd.DataFrame(
        {"sample_id": list(reasons), "reason": ["; ".join(r) for r in reasons.values()]},
        columns=["sample_id", "reason"],
    )
    if len(excluded):
        log.warning("%d sample(s) lack an input and are excluded (listed in excluded.csv), e.g. %s",
                    len(excluded), "; ".join(f"{s}: {r}" for s, r in zip(excluded.sample_id[:3], excluded.reason[:3], strict=False)))
    kept = table[keep].reset_index(drop=True)
    blocks = {name: take_block(block, positions[name][keep].astype(np.int64)) for name, (_ids, block) in inputs.items()}
    return HeadData(kept, blocks, list(tasks), excluded)


def load_head_data(
    *,
    splits: str | Path,
    manifest: str | Path,
    tasks: Sequence[str],
    features: Mapping[str, str | Path] | None = None,
    tables: Mapping[str, tuple[str | Path, Sequence[str] | None]] | None = None,
    predictions: Mapping[str, str | Path] | None = None,
    slice_labels: str | Path | None = None,
) -> HeadData:
    """Read and join a head's inputs: ``features`` name → features HDF5, ``tables`` name → (file,
    variables or None for all), ``predictions`` name → another head's predictions.csv (its
    probability for each of ``tasks``), ``slice_labels`` → the slice-stack ingest file."""
    table = sample_table(splits, manifest, tasks)
    inputs: dict[str, tuple[list[str], Block]] = {}
    meta: dict[str, Any] = {}
    for name, path in (features or {}).items():
        inputs[name] = read_feature_block(path)
    for name, (path, variables) in (tables or {}).items():
        inputs[name] = read_table_block(path, variables)
    for name, path in (predictions or {}).items():
        inputs[name] = read_prediction_block(path, tasks)
    if slice_labels is not None:
        ids, labels, meta["slice_task"] = read_slice_labels(slice_labels)
        inputs["slice_labels"] = (ids, labels)
    data = join_inputs(table, inputs, tasks)
    data.meta.update(meta)
    return data


def read_prediction_block(path: str | Path, tasks: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Another head's probabilities, one column per task, keyed by sample_id."""
    frame = read_contract_csv(path)
    wide = frame.pivot_table(index="sample_id", columns="task", values="y_prob", aggfunc="first")
    missing = [t for t in tasks if t not in wide.columns]
    if missing:
        raise ValueError(f"{path} has no predictions for task(s) {', '.join(missing)}")
    wide = wide[list(tasks)]
    return wide.index.astype(str).tolist(), wide.to_numpy(dtype=np.float64)


class FeatureScaler:
    """Per-feature z-scores with the training split's statistics, for vectors (N × D) and for
    sequences (a Ragged block, statistics over all its steps). Frozen-encoder features come at any
    scale (post-ReLU averages, most near zero): unscaled, one input can dominate a projection,
    weight decay, or saturate an LSTM's gates."""

    def fit(self, block: Block) -> FeatureScaler:
        values = np.asarray(block.values if isinstance(block, Ragged) else block, dtype=np.float64)
        self.mean_, self.std_ = values.mean(axis=0), np.maximum(values.std(axis=0), 1e-6)
        return self

    def transform(self, block: Block) -> Block:
        if isinstance(block, Ragged):
            return block.with_values(((block.values - self.mean_) / self.std_).astype(np.float32))
        return ((np.asarray(block, dtype=np.float64) - self.mean_) / self.std_).astype(np.float32)
