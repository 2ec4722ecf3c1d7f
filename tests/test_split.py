"""Splits: patient-grouped, stratified, centre hold-out, folds, user-fixed splits, deterministic."""

import numpy as np
import pandas as pd
import pytest

from medflow.split import SplitError, check_grouping, make_splits

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def cohort(n_patients=120, seed=0, centres=("A", "B", "C"), max_samples=4, prevalence=0.3):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        centre = centres[p % len(centres)]
        label = float(rng.random() < prevalence)
        for k in range(int(rng.integers(1, max_samples + 1))):
            rows.append({"sample_id": f"p{p}-{k}", "patient_id": f"p{p}", "center": centre, "y": label})
    return pd.DataFrame(rows)


def test_no_patient_crosses_splits_when_patients_have_several_samples():
    manifest = cohort()
    assert manifest.groupby("patient_id").size().max() > 1
    splits = make_splits(manifest, label="y", fractions=FRACTIONS, seed=1)
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(splits["split"]) == {"train", "val", "test"}
    assert splits["sample_id"].tolist() == manifest["sample_id"].tolist()


def test_fractions_and_stratification_at_patient_level():
    manifest = cohort(n_patients=400, max_samples=1)
    splits = make_splits(manifest, label="y", fractions=FRACTIONS, seed=3)
    joined = splits.merge(manifest[["sample_id", "y"]])
    share = joined["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.02)
    assert share["test"] == pytest.approx(0.15, abs=0.02)
    prevalence = joined.groupby("split")["y"].mean()
    assert prevalence.max() - prevalence.min() < 0.04


def test_deterministic_for_a_seed_and_different_for_another():
    manifest = cohort()
    a = make_splits(manifest, label="y", fractions=FRACTIONS, seed=7)
    b = make_splits(manifest.sample(frac=1, random_state=1), label="y", fractions=FRACTIONS, seed=7)
    c = make_splits(manifest, label="y", fractions=FRACTIONS, seed=8)
    merged = a.merge(b, on="sample_id")
    assert (merged["split_x"] == merged["split_y"]).all()  # row order of the manifest does not matter
    assert not a["split"].equals(c["split"])


def test_external_centres_are_held_out_entirely():
    manifest = cohort()
    splits = make_splits(manifest, label="y", fractions=FRACTIONS, external_centers=["C"])
    assert set(splits.loc[splits["center"] == "C", "split"]) == {"external"}
    assert "external" not in set(splits.loc[splits["center"] != "C", "split"])
    with pytest.raises(SplitError, match=r"external_centers \['Z'\] are not centres of this cohort"):
        make_splits(manifest, label="y", fractions=FRACTIONS, external_centers=["Z"])


def test_grouped_folds_balance_and_never_split_a_patient():
    manifest = cohort(n_patients=100, centres=("A", "B"))
    splits = make_splits(manifest, label="y", fractions={"train": 0.8, "val": 0.0, "test": 0.2}, folds=5)
    train = splits[splits["split"] == "train"]
    assert set(train["fold"]) == {0, 1, 2, 3, 4}
    assert (splits.loc[splits["split"] != "train", "fold"] == -1).all()
    assert (splits.groupby("patient_id")["fold"].nunique() == 1).all()
    per_fold = train.groupby("fold")["patient_id"].nunique()
    assert per_fold.max() - per_fold.min() <= 1
    labels = train.merge(manifest[["sample_id", "y"]]).groupby("patient_id")["y"].first()
    folds = train.groupby("patient_id")["fold"].first()
    positives = labels.groupby(folds).sum()
    assert positives.max() - positives.min() <= 2


def test_user_fixed_split_wins():
    manifest = cohort()
    manifest["split"] = pd.NA
    fixed = manifest["patient_id"].isin(["p0", "p1", "p2"])
    manifest.loc[fixed, "split"] = "test"
    splits = make_splits(manifest, label="y", fractions=FRACTIONS, seed=5)
    assert set(splits.loc[fixed.to_numpy(), "split"]) == {"test"}


def test_check_grouping_catches_a_leak():
    leaky = pd.DataFrame({"patient_id": ["p", "p"], "split": ["train", "test"], "fold": [-1, -1]})
    with pytest.raises(SplitError, match="appear in several splits"):
        check_grouping(leaky)


def test_a_cohort_whose_every_patient_has_a_fixed_split_is_split_as_fixed():
    """Importers of the seeds' own folders fix every split (train/valid/itest/etest folders)."""
    import pandas as pd

    from medflow.split import make_splits

    manifest = pd.DataFrame({"sample_id": [f"s{i}" for i in range(8)], "patient_id": [f"p{i}" for i in range(8)],
                             "center": "A", "y": [0, 1] * 4,
                             "split": ["train", "train", "train", "train", "val", "val", "test", "test"]})
    splits = make_splits(manifest, label="y", fractions={"train": 0.7, "val": 0.15, "test": 0.15}, folds=2)
    assert splits["split"].tolist() == manifest["split"].tolist()
    assert sorted(splits.loc[splits["split"] == "train", "fold"]) == [0, 0, 1, 1]
