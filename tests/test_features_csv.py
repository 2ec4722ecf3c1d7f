"""Feature vectors as CSV on request (issue 14, item 5): columns, ids kept as written, slice stacks
one row per slice, and a target no study builds unless it is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_workflow import make_workdir, snakemake

from medflow.io.contracts import read_contract_csv, write_contract_csv
from medflow.io.features import features_to_csv, write_features


def _splits(path, ids, patients, splits):
    frame = pd.DataFrame({"sample_id": ids, "patient_id": patients, "center": "A", "split": splits, "fold": -1})
    write_contract_csv(frame, path)


def test_vectors_one_row_per_sample(tmp_path):
    ids = ["007", "NA", "b"]
    feats = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
    write_features(tmp_path / "f.h5", ids, feats, attrs={"model": "m"})
    _splits(tmp_path / "splits.csv", ["b", "NA", "007"], ["P2", "0042", "P1"], ["test", "val", "train"])
    assert features_to_csv(tmp_path / "f.h5", tmp_path / "splits.csv", tmp_path / "f.csv") == 3
    text = (tmp_path / "f.csv").read_text()
    assert text.splitlines()[0] == "sample_id,patient_id,split,f0,f1"
    assert text.splitlines()[1].startswith("007,P1,train,0.0,0.25")
    got = read_contract_csv(tmp_path / "f.csv")
    assert got.sample_id.tolist() == ids and got.patient_id.tolist() == ["P1", "0042", "P2"]
    assert got.split.tolist() == ["train", "val", "test"]
    np.testing.assert_array_equal(got[["f0", "f1"]].to_numpy(np.float32), feats)
    assert str(tmp_path) not in text


def test_slice_stack_one_row_per_slice_with_its_index(tmp_path):
    feats = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    write_features(tmp_path / "f.h5", ["s1", "s2", "s3"], feats, offsets=np.array([0, 3, 3, 5]))
    _splits(tmp_path / "splits.csv", ["s1", "s2", "s3"], ["p1", "p2", "p3"], ["train", "val", "test"])
    assert features_to_csv(tmp_path / "f.h5", tmp_path / "splits.csv", tmp_path / "f.csv") == 5
    got = read_contract_csv(tmp_path / "f.csv")
    assert list(got.columns) == ["sample_id", "patient_id", "split", "slice", "f0", "f1", "f2"]
    assert got.sample_id.tolist() == ["s1", "s1", "s1", "s3", "s3"]
    assert got.slice.tolist() == [0, 1, 2, 0, 1] and got.split.tolist()[-1] == "test"
    np.testing.assert_array_equal(got[["f0", "f1", "f2"]].to_numpy(np.float32), feats)


def test_csv_is_planned_only_when_named(tmp_path):
    workdir = make_workdir(tmp_path)
    target = "results/lnmc/features/ct_patch-convnet.csv"
    named = snakemake(workdir, "-n", target).stdout
    assert "rule features_csv:" in named and target in named
    assert "features_csv" not in snakemake(workdir, "-n").stdout
