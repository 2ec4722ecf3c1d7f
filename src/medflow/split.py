"""Patient-grouped, label-stratified splits with centre hold-out, optional folds and user-fixed splits.

Everything is decided per *patient*, so no patient can straddle two splits or two folds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medflow.io.contracts import SPLIT_COLUMNS, write_contract_csv

log = logging.getLogger(__name__)

NO_FOLD = -1


class SplitError(ValueError):
    """The requested split cannot be made from this cohort."""


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts summing to ``n`` in proportion to ``fractions`` (largest remainder)."""
    raw = np.asarray(fractions, dtype=float) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _patient_table(manifest: pd.DataFrame, label: str) -> pd.DataFrame:
    """One row per patient: its centre, its stratum label (any positive sample) and any fixed split."""
    agg: dict[str, Any] = {"center": ("center", "first"), "label": (label, "max")}
    if "split" in manifest.columns:
        agg["fixed"] = ("split", "first")
    patients = manifest.groupby("patient_id", sort=True).agg(**agg)
    if "fixed" not in patients.columns:
        patients["fixed"] = pd.NA
    return patients


def make_splits(
    manifest: pd.DataFrame,
    *,
    label: str,
    fractions: Mapping[str, float],
    seed: int = 42,
    external_centers: Sequence[str] = (),
    folds: int = 0,
) -> pd.DataFrame:
    """Assign every sample to train/val/test/external (and a fold) by patient.

    Patients of ``external_centers`` form the ``external`` split; a non-empty ``split`` column fixes
    a patient's split; the remaining patients are shuffled with ``seed`` within strata of
    (centre, label) and cut by ``fractions``. With ``folds`` = k > 0, train patients are dealt
    round-robin into k folds within each label stratum.
    """
    if label not in manifest.columns:
        raise SplitError(f"stratification label {label!r} is not a manifest column")
    centres = set(manifest["center"].unique())
    unknown = [c for c in external_centers if c not in centres]
    if unknown:
        raise SplitError(
            f"external_centers {unknown} are not centres of this cohort (centres: {', '.join(sorted(centres))})"
        )
    rng = np.random.default_rng(seed)
    patients = _patient_table(manifest, label)
    patients["split"] = patients["fixed"].astype("object")
    is_external = patients["center"].isin(list(external_centers))
    clash = is_external & patients["split"].notna() & (patients["split"] != "external")
    if clash.any():
        raise SplitError(
            f"patients {', '.join(patients.index[clash][:5])} are fixed to a split but belong to an external centre"
        )
    patients.loc[is_external, "split"] = "external"

    names = ("train", "val", "test")
    shares = [float(fractions[n]) for n in names]
    free = patients["split"].isna()
    # every patient fixed (an importer of a seed's split folders): nothing to cut, and agg over an
    # empty frame would give a frame, not the series of strata
    strata = patients.loc[free, ["center", "label"]].astype(str).agg("|".join, axis=1) if free.any() else pd.Series(dtype=str)
    for _, members in strata.groupby(strata, sort=True):
        ids = members.index.to_numpy()
        ids = ids[rng.permutation(len(ids))]
        counts = _allocate(len(ids), shares)
        start = 0
        for name, count in zip(names, counts, strict=True):
            patients.loc[ids[start : start + count], "split"] = name
            start += count

    patients["fold"] = NO_FOLD
    if folds:
        train = patients.index[patients["split"] == "train"]
        if len(train) < folds:
            raise SplitError(f"{folds} folds need at least {folds} training patients, found {len(train)}")
        offset = 0
        for _, members in patients.loc[train].groupby(patients.loc[train, "label"].astype(str), sort=True):
            ids = members.index.to_numpy()[rng.permutation(len(members))]
            # Continue the round-robin across strata so fold sizes stay within one patient of each other.
            patients.loc[ids, "fold"] = (np.arange(len(ids)) + offset) % folds
            offset += len(ids)

    out = manifest[["sample_id", "patient_id", "center"]].merge(
        patients[["split", "fold"]], left_on="patient_id", right_index=True, how="left", validate="many_to_one"
    )
    out["fold"] = out["fold"].astype(int)
    check_grouping(out)
    return out[list(SPLIT_COLUMNS)].reset_index(drop=True)


def check_grouping(splits: pd.DataFrame) -> None:
    """Raise if any patient appears in two splits or two folds (the property every split must keep)."""
    for column in ("split", "fold"):
        spread = splits.groupby("patient_id")[column].nunique()
        if (spread > 1).any():
            raise SplitError(f"patients {', '.join(spread.index[spread > 1][:5])} appear in several {column}s")


def summarise(splits: pd.DataFrame, manifest: pd.DataFrame, label: str) -> pd.DataFrame:
    """Samples, patients and prevalence per split and centre (for logs and reports)."""
    joined = splits.merge(manifest[["sample_id", label]], on="sample_id")
    return (
        joined.groupby(["split", "center"])
        .agg(samples=("sample_id", "size"), patients=("patient_id", "nunique"), prevalence=(label, "mean"))
        .reset_index()
    )


def write_splits(cohort: Any, split: Mapping[str, Any], labels: Sequence[str], out_path: str) -> pd.DataFrame:
    """Make the study's splits from its config ``split`` block and write them atomically to ``out_path``."""

    label = split.get("stratify") or labels[0]
    splits = make_splits(
        cohort.manifest,
        label=label,
        fractions=split["fractions"],
        seed=split["seed"],
        external_centers=split.get("external_centers", []),
        folds=split.get("folds", 0),
    )
    if cohort.grouping == "none":
        log.warning("cohort has no patient ids: every sample is its own group, so splits are not patient-grouped")
    log.info("splits:\n%s", summarise(splits, cohort.manifest, label).to_string(index=False))
    write_contract_csv(splits, out_path, SPLIT_COLUMNS)
    return splits
