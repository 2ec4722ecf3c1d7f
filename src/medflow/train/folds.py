"""One stage-1 ``predictions.csv`` from the k fold models of a cross-validated network.

pandas only, no torch: the fold-ensemble rule must not pay for (or need) a torch import.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medflow.io.contracts import read_contract_csv, write_predictions


def fold_ensemble(fold_predictions: dict[int, str | Path], splits_path: str | Path, out_path: str | Path) -> Path:
    """One predictions.csv from k fold models: a training-split sample is scored by the model whose
    validation fold it was (out of fold, so its split reads ``val``); every other sample by the
    mean probability of all fold models (the fold ensemble)."""
    frames = []
    for fold, path in sorted(fold_predictions.items()):
        frame = read_contract_csv(path)
        frames.append(frame.assign(model_fold=int(fold)))
    every = pd.concat(frames, ignore_index=True)
    folds = read_contract_csv(splits_path)[["sample_id", "fold"]]
    every = every.merge(folds, on="sample_id", how="left", validate="many_to_one")
    in_cv = every["split"] == "train"
    out_of_fold = every[in_cv & (every["fold"] == every["model_fold"])].assign(split="val")
    ensemble = (
        every[~in_cv]
        .groupby(["sample_id", "patient_id", "split", "center", "task"], sort=False, dropna=False)
        .agg(y_true=("y_true", "first"), y_prob=("y_prob", "mean"), models=("model_fold", "nunique"))
        .reset_index()
    )
    if len(ensemble) and (ensemble["models"] != len(fold_predictions)).any():
        raise ValueError("the fold models did not all score the same samples")
    missing = set(every.loc[in_cv, "sample_id"]) - set(out_of_fold["sample_id"])
    if missing:
        raise ValueError(f"{len(missing)} training sample(s) have no out-of-fold prediction, e.g. {sorted(missing)[:3]}")
    write_predictions(pd.concat([out_of_fold, ensemble], ignore_index=True), out_path)
    return Path(out_path)
