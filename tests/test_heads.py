"""Stage-2 heads on tiny planted-signal cohorts: shapes, signal recovered, train-only fitting,
joins by id, excluded samples, the published DSAF's degenerate attention, packed LSTMs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import calibration
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from medflow.heads.dsaf import DSAFPublished, DSAFTokens, SelfAttention
from medflow.heads.inputs import HeadData, Ragged, load_head_data
from medflow.heads.neural import masked_pool
from medflow.heads.run import run_head
from medflow.heads.specs import expand_heads
from medflow.heads.tabular import TableEncoder
from medflow.io.features import read_features, write_features

CPU = torch.device("cpu")
FAST = {"epochs": 12, "batch_size": 16, "lr": 0.003}


def make_cohort(root: Path, n: int = 160, seed: int = 0, *, slices: bool = False) -> dict[str, Path]:
    """Patients with 1–2 samples; label y; two feature files and a clinical table carrying signal."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n // 2), 2)[:n]
    y = (rng.random(n // 2) < 0.4).astype(int)[patients]
    split = np.array(["train", "val", "test"])[rng.choice(3, n // 2, p=[0.6, 0.2, 0.2])][patients]
    ids = [f"S{i:04d}" for i in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"sample_id": ids, "patient_id": [f"P{p}" for p in patients], "center": "A",
                  "split": split, "fold": -1}).to_csv(root / "splits.csv", index=False)
    pd.DataFrame({"sample_id": ids, "patient_id": [f"P{p}" for p in patients], "center": "A",
                  "y": y, "z": 1 - y}).to_csv(root / "manifest.csv", index=False)
    paths = {"splits": root / "splits.csv", "manifest": root / "manifest.csv"}
    for name, dim, shift in (("a", 16, 1.0), ("b", 12, 0.8)):
        x = rng.normal(size=(n, dim)).astype(np.float32)
        x[:, :3] += shift * y[:, None]
        write_features(root / f"{name}.h5", ids, x)
        paths[name] = root / f"{name}.h5"
    clinical = pd.DataFrame({
        "sample_id": ids, "size_mm": 10 + 4 * y + rng.normal(0, 3, n),
        "sex": rng.choice(["F", "M"], n), "age": rng.integers(20, 80, n),
    })
    clinical.to_parquet(root / "clinical.parquet")
    paths["clinical"] = root / "clinical.parquet"
    if slices:
        lengths = rng.integers(4, 12, n)
        offsets = np.r_[0, np.cumsum(lengths)]
        slice_y = np.concatenate([
            (rng.random(k) < 0.5).astype(np.int8) if label else np.zeros(k, np.int8) for k, label in zip(lengths, y, strict=False)
        ])
        feats = rng.normal(size=(offsets[-1], 8)).astype(np.float32)
        feats[:, 0] += 2.0 * slice_y
        write_features(root / "seq.h5", ids, feats, offsets=offsets)
        with h5py.File(root / "stack.h5", "w") as f:
            f["sample_id"] = np.array(ids, dtype=object).astype("S")
            f["offsets"] = offsets
            f["slice_label"] = slice_y
            f["slice_label"].attrs["label"] = "pe_present_on_image"
        paths["seq"], paths["stack"] = root / "seq.h5", root / "stack.h5"
    return paths


def fit(tmp: Path, paths: dict[str, Path], name: str, spec: dict, files: dict) -> pd.DataFrame:
    out = tmp / "out" / name
    run_head(name, {"tasks": ["y"], **spec}, splits=paths["splits"], manifest=paths["manifest"], files=files,
             out_dir=out, device=CPU)
    return pd.read_csv(out / "predictions.csv", dtype={"sample_id": str})


def held_out_auc(frame: pd.DataFrame, task: str = "y", split: str = "test") -> float:
    rows = frame[(frame.split == split) & (frame.task == task)]
    return float(roc_auc_score(rows.y_true, rows.y_prob))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_cohort(tmp_path_factory.mktemp("cohort"), slices=True)


def files_for(paths: dict[str, Path], *names: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {"features": {}, "tables": {}}
    for name in names:
        out["tables" if name == "clinical" else "features"][name] = str(paths[name])
    return out


@pytest.mark.parametrize("kind", ["logreg", "svm", "rf", "gbdt", "xgboost"])
def test_classical_heads_recover_the_planted_signal(tmp_path: Path, cohort: dict[str, Path], kind: str) -> None:
    spec = {"type": kind, "inputs": ["a", "b", "clinical"], "cv_folds": 3}
    if kind in ("rf", "gbdt", "xgboost"):
        spec["grid"] = {"max_depth": [2]}
    frame = fit(tmp_path, cohort, kind, spec, files_for(cohort, "a", "b", "clinical"))
    assert set(frame.split) == {"train", "val", "test"}
    assert len(frame) == 160 and frame.y_prob.between(0, 1).all()
    assert held_out_auc(frame) > 0.8
    info = json.loads((tmp_path / "out" / kind / "head.json").read_text())
    assert 0 < info["thresholds"]["y"] < 1 and info["search"]["y"]["folds"] == 3


@pytest.mark.parametrize("variant", ["published", "tokens"])
@pytest.mark.parametrize("inputs", [["a", "b"], ["a", "b", "clinical"]])
def test_dsaf_learns_from_two_and_three_modalities(tmp_path: Path, cohort: dict[str, Path], variant: str,
                                                   inputs: list[str]) -> None:
    spec = {"type": "dsaf", "inputs": inputs, "variant": variant, "width": 32, "train": FAST}
    frame = fit(tmp_path, cohort, "dsaf", spec, files_for(cohort, *inputs))
    assert held_out_auc(frame) > 0.8
    assert (tmp_path / "out" / "dsaf" / "model.pt").is_file()
    history = pd.read_csv(tmp_path / "out" / "dsaf" / "history.csv")
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]


def test_single_token_attention_is_its_value_projection() -> None:
    torch.manual_seed(0)
    attention = SelfAttention(8)
    x = torch.randn(5, 1, 8)
    assert torch.allclose(attention(x), attention.value(x), atol=1e-6)
    x2 = torch.randn(5, 3, 8)  # with several tokens the attention mixes them: not the value projection
    assert not torch.allclose(attention(x2), attention.value(x2), atol=1e-3)


def test_published_dsaf_modality_weights_are_trained_parameters() -> None:
    model = DSAFPublished([16, 16], clinical_dim=4, n_out=1, width=None)
    names = {n for n, _ in model.named_parameters()}
    assert {"images.w1", "images.w2", "clinical_tumour.w1", "all.w2"} <= names
    batch = {"images": [torch.randn(6, 16), torch.randn(6, 16)], "clinical": torch.randn(6, 4)}
    model(batch).sum().backward()
    assert model.images.w1.grad is not None and model.images.w1.grad.abs() > 0
    # the query/key of single-token attention get no gradient, as in the published model
    assert model.images.shared.query.weight.grad is None or model.images.shared.query.weight.grad.abs().max() == 0


def test_token_dsaf_output_depends_on_the_other_modality_through_attention() -> None:
    torch.manual_seed(0)
    model = DSAFTokens([6, 6], n_out=1, width=8, dropout=0.0).eval()
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    with torch.no_grad():
        base = model({"tokens": [a, b]})
        changed = model({"tokens": [a, b + 3.0]})
    assert not torch.allclose(base, changed)


def test_fitting_sees_training_data_only(tmp_path: Path) -> None:
    """Scrambling the test split's inputs must change nothing about the train/val predictions or the
    threshold: scalers, one-hot levels, grid search and the network saw training data only."""
    paths = make_cohort(tmp_path / "c1", seed=3)
    other = make_cohort(tmp_path / "c2", seed=3)
    splits = pd.read_csv(other["splits"])
    test_ids = set(splits.sample_id[splits.split == "test"])
    ids, x, _ = read_features(other["a"])
    x[[i for i, s in enumerate(ids) if s in test_ids]] = 1000.0
    write_features(other["a"], ids, x)
    clinical = pd.read_parquet(other["clinical"])
    test_rows = clinical.sample_id.isin(test_ids)
    clinical.loc[test_rows, "size_mm"] = 1e6
    clinical.loc[test_rows, "sex"] = "unknown-level"
    clinical.to_parquet(other["clinical"])
    for spec in ({"type": "logreg", "inputs": ["a", "clinical"], "cv_folds": 3},
                 {"type": "dsaf", "inputs": ["a", "b", "clinical"], "variant": "tokens", "width": 16, "train": {**FAST, "epochs": 3}}):
        one = fit(tmp_path / "r1", paths, spec["type"], spec, files_for(paths, "a", "b", "clinical"))
        two = fit(tmp_path / "r2", other, spec["type"], spec, files_for(other, "a", "b", "clinical"))
        kept = one.split != "test"
        np.testing.assert_allclose(one.y_prob[kept].to_numpy(), two.y_prob[kept].to_numpy(), rtol=1e-6)
        t1 = json.loads((tmp_path / "r1" / "out" / spec["type"] / "head.json").read_text())["thresholds"]
        t2 = json.loads((tmp_path / "r2" / "out" / spec["type"] / "head.json").read_text())["thresholds"]
        assert t1 == t2
        assert not np.allclose(one.y_prob[~kept].to_numpy(), two.y_prob[~kept].to_numpy())


def test_table_encoder_statistics_come_from_the_rows_it_was_fitted_on() -> None:
    train = pd.DataFrame({"size": [1.0, 2.0, 3.0], "sex": ["F", "M", "F"], "n": pd.array([1, None, 3], "Int64")})
    encoder = TableEncoder().fit(train)
    out = encoder.transform(pd.DataFrame({"size": [2.0], "sex": ["X"], "n": pd.array([None], "Int64")}))
    # size 2 is the training mean → 0; unseen sex level → all-zero one-hot; missing n → training median → 0
    assert out.shape == (1, 4)
    np.testing.assert_allclose(out[0], [0.0, 0.0, 0.0, 0.0], atol=1e-6)


def patients_of(paths: dict[str, Path]) -> pd.Series:
    return pd.read_csv(paths["manifest"], dtype=str).set_index("sample_id").patient_id


def test_grid_search_fits_the_table_encoder_on_each_folds_training_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clinical column with one level per patient: the encoder scored on CV fold k must not know the
    levels of fold k's patients (an encoder fitted on the whole training split makes CV optimistic)."""
    paths = make_cohort(tmp_path / "c", seed=7)
    clinical = pd.read_parquet(paths["clinical"])
    clinical["patient"] = clinical.sample_id.map(patients_of(paths))
    clinical.to_parquet(paths["clinical"])
    fitted_on: list[frozenset[str]] = []
    real_fit = TableEncoder.fit

    def spy_fit(self: TableEncoder, frame: pd.DataFrame, y: object = None) -> TableEncoder:
        fitted_on.append(frozenset(frame[next(c for c in frame.columns if c.endswith("patient"))]))
        return real_fit(self, frame)

    held_out: list[frozenset[str]] = []
    real_split = StratifiedGroupKFold.split

    def spy_split(self: StratifiedGroupKFold, X: object, y: object = None,
                  groups: object = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for train, test in real_split(self, X, y, groups):
            held_out.append(frozenset(np.asarray(groups)[test]))
            yield train, test

    monkeypatch.setattr(TableEncoder, "fit", spy_fit)
    monkeypatch.setattr(StratifiedGroupKFold, "split", spy_split)
    fit(tmp_path, paths, "logreg", {"type": "logreg", "inputs": ["a", "clinical"], "cv_folds": 3},
        files_for(paths, "a", "clinical"))
    splits = pd.read_csv(paths["splits"], dtype=str)
    training = frozenset(splits.patient_id[splits.split == "train"])
    assert len(held_out) == 3 and frozenset().union(*held_out) == training
    # one encoder per fold, on the other folds' patients, and the final model's on the whole split
    assert set(fitted_on) == {training - fold for fold in held_out} | {training}


def test_svm_calibration_folds_never_split_a_patient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Platt calibration (in each CV fold and the final fit) scores held-out patients only. The
    first input carries the patient number, so the scaled design's column 0 tells the patients apart."""
    paths = make_cohort(tmp_path / "c", seed=9)
    ids, _, _ = read_features(paths["a"])
    patient_number = patients_of(paths)[ids].str.removeprefix("P").astype(np.float32).to_numpy()
    write_features(tmp_path / "pid.h5", ids, patient_number[:, None])
    paths["pid"] = tmp_path / "pid.h5"
    calibrations: list[tuple[np.ndarray, list]] = []
    real = calibration.cross_val_predict

    def spy(estimator: object, X: np.ndarray, y: np.ndarray, *, cv: object, **kw: object) -> np.ndarray:
        splits = list(cv.split(X, y))
        calibrations.append((np.asarray(X)[:, 0], splits))
        return real(estimator, X, y, cv=cv, **kw)

    monkeypatch.setattr(calibration, "cross_val_predict", spy)
    frame = fit(tmp_path, paths, "svm", {"type": "svm", "inputs": ["pid", "a", "clinical"], "cv_folds": 3},
                files_for(paths, "pid", "a", "clinical"))
    assert len(calibrations) == 4 * 3 + 1  # each C of the grid in each CV fold, then the final model
    for patient, splits in calibrations:
        for train, test in splits:
            assert not set(patient[train]) & set(patient[test])
    assert frame.y_prob.between(0, 1).all()


def test_classical_predictions_are_probabilities_keyed_by_sample_id(tmp_path: Path) -> None:
    """The head scores every sample once per task by id: the same probabilities whatever the row
    order of its feature files."""
    paths = make_cohort(tmp_path / "c", seed=4)
    ids, x, _ = read_features(paths["b"])
    order = np.random.default_rng(1).permutation(len(ids))
    write_features(tmp_path / "b_shuffled.h5", [ids[i] for i in order], x[order])
    spec = {"type": "svm", "inputs": ["a", "b", "clinical"], "cv_folds": 3, "grid": {"C": [0.02, 0.2]}}
    frames = [fit(tmp_path / name, paths, "svm", spec, {"features": {"a": str(paths["a"]), "b": str(b)},
                                                         "tables": {"clinical": str(paths["clinical"])}})
              for name, b in (("plain", paths["b"]), ("shuffled", tmp_path / "b_shuffled.h5"))]
    for frame in frames:
        assert frame.sample_id.is_unique and set(frame.sample_id) == set(ids)
        assert frame.y_prob.between(0, 1).all() and frame.y_prob.nunique() > 2
    plain, shuffled = (f.set_index("sample_id").y_prob.sort_index() for f in frames)
    np.testing.assert_allclose(plain, shuffled, rtol=1e-9)


def test_join_is_by_id_and_missing_samples_are_reported(tmp_path: Path) -> None:
    paths = make_cohort(tmp_path / "c", seed=5)
    ids, x, _ = read_features(paths["b"])
    order = np.random.default_rng(0).permutation(len(ids))
    shuffled = tmp_path / "b_shuffled.h5"
    write_features(shuffled, [ids[i] for i in order], x[order])
    dropped = tmp_path / "b_dropped.h5"
    write_features(dropped, ids[1:], x[1:])
    data = load_head_data(splits=paths["splits"], manifest=paths["manifest"], tasks=["y"],
                          features={"a": paths["a"], "b": shuffled})
    reference = load_head_data(splits=paths["splits"], manifest=paths["manifest"], tasks=["y"],
                               features={"a": paths["a"], "b": paths["b"]})
    np.testing.assert_array_equal(data.blocks["b"], reference.blocks["b"])
    partial = load_head_data(splits=paths["splits"], manifest=paths["manifest"], tasks=["y"],
                             features={"a": paths["a"], "b": dropped})
    assert len(partial) == len(reference) - 1
    assert partial.excluded.to_dict("records") == [{"sample_id": ids[0], "reason": "no b"}]
    frame = fit(tmp_path, paths, "lr", {"type": "logreg", "inputs": ["a", "b"], "cv_folds": 3},
                {"features": {"a": str(paths["a"]), "b": str(dropped)}})
    assert ids[0] not in set(frame.sample_id)
    excluded = pd.read_csv(tmp_path / "out" / "lr" / "excluded.csv")
    assert excluded.sample_id.tolist() == [ids[0]]


def test_image_lstm_scores_every_slice_and_finds_the_positive_ones(tmp_path: Path, cohort: dict[str, Path]) -> None:
    files = {"features": {"seq": str(cohort["seq"])}, "slices": {"stack": str(cohort["stack"])}}
    frame = fit(tmp_path, cohort, "img", {"type": "lstm_image", "inputs": ["seq"], "hidden": 16,
                                          "train": {**FAST, "batch_size": 8}}, files)
    slices = pd.read_csv(tmp_path / "out" / "img" / "slice_predictions.csv")
    with h5py.File(cohort["stack"]) as f:
        assert len(slices) == int(f["offsets"][-1])
    known = slices.y_true.notna()
    assert roc_auc_score(slices.y_true[known], slices.y_prob[known]) > 0.8
    assert held_out_auc(frame) > 0.8  # the study score is its highest slice probability


def test_study_lstm_is_independent_of_batch_padding(tmp_path: Path, cohort: dict[str, Path]) -> None:
    files = {"features": {"seq": str(cohort["seq"])}}
    spec = {"type": "lstm_study", "inputs": ["seq"], "hidden": 16, "train": {**FAST, "batch_size": 8}}
    frame = fit(tmp_path, cohort, "study", {**spec, "tasks": ["y", "z"]}, files)
    assert set(frame.task) == {"y", "z"}
    assert held_out_auc(frame) > 0.75


def test_masked_pool_ignores_padding_and_empty_items() -> None:
    steps = torch.tensor([[[1.0], [5.0], [100.0]], [[2.0], [0.0], [0.0]], [[9.0], [9.0], [9.0]]])
    lengths = torch.tensor([2, 1, 0])
    assert masked_pool(steps, lengths, "max")[:, 0].tolist() == [5.0, 2.0, 0.0]
    assert masked_pool(steps, lengths, "mean")[:, 0].tolist() == [3.0, 2.0, 0.0]
    assert masked_pool(steps, lengths, "last")[:, 0].tolist() == [5.0, 2.0, 0.0]


def test_ragged_take_keeps_each_sample_rows() -> None:
    ragged = Ragged(np.arange(10, dtype=np.float32)[:, None], np.array([0, 3, 3, 10]))
    taken = ragged.take([2, 0, 1])
    assert taken.offsets.tolist() == [0, 7, 10, 10]
    assert taken.item(1)[:, 0].tolist() == [0, 1, 2] and len(taken.item(2)) == 0


def test_fusion_grid_expands_to_named_heads() -> None:
    study = {"labels": ["mortality", "longstay"], "split": {"stratify": "mortality"}, "stage2": {"fusion": {
        "type": "fusion_grid", "modalities": {"e": "ev", "c": "cx", "n": "no"}, "sets": ["ecn", "cn"],
        "modes": ["early", "joint", "late"], "tasks": ["mortality", "longstay"]}}}
    heads = expand_heads(study)
    assert heads["ecn_joint_mortality"]["inputs"] == ["ev", "cx", "no"]
    assert heads["cn_early_longstay"]["inputs"] == ["c_unimodal_longstay", "n_unimodal_longstay"]
    assert heads["ecn_late_mortality"]["type"] == "ehr_late"
    assert {h for h in heads if "unimodal" in h} == {f"{m}_unimodal_{t}" for m in "ecn" for t in ("mortality", "longstay")}
    assert len(heads) == 2 * (3 + 2 * 3)


def test_ehr_unimodal_early_joint_and_late(tmp_path: Path, cohort: dict[str, Path]) -> None:
    out = tmp_path / "out"
    train = {**FAST, "epochs": 8}
    uni = {"a": {"features": {"a": str(cohort["a"])}}, "seq": {"features": {"seq": str(cohort["seq"])}}}
    for name, files in uni.items():
        fit(tmp_path, cohort, f"{name}_uni", {"type": "ehr_unimodal", "inputs": [name], "hidden": 8, "train": train}, files)
    _ids, emb, _ = read_features(out / "a_uni" / "embeddings.h5")
    assert emb.shape == (160, 8)
    early = fit(tmp_path, cohort, "early", {"type": "ehr_early", "inputs": ["a_uni", "seq_uni"], "hidden": 8, "train": train},
                {"features": {"a_uni": str(out / "a_uni" / "embeddings.h5"), "seq_uni": str(out / "seq_uni" / "embeddings.h5")}})
    joint = fit(tmp_path, cohort, "joint", {"type": "ehr_joint", "inputs": ["a", "seq"], "hidden": 8, "train": train},
                {"features": {"a": str(cohort["a"]), "seq": str(cohort["seq"])}})
    late = fit(tmp_path, cohort, "late", {"type": "ehr_late", "inputs": ["a_uni", "seq_uni"]},
               {"predictions": {"a_uni": str(out / "a_uni" / "predictions.csv"),
                                "seq_uni": str(out / "seq_uni" / "predictions.csv")}})
    aucs = {name: held_out_auc(frame) for name, frame in (("early", early), ("joint", joint), ("late", late))}
    assert min(aucs.values()) > 0.7, aucs
    a = pd.read_csv(out / "a_uni" / "predictions.csv", dtype={"sample_id": str}).set_index("sample_id").y_prob
    s = pd.read_csv(out / "seq_uni" / "predictions.csv", dtype={"sample_id": str}).set_index("sample_id").y_prob
    np.testing.assert_allclose(late.set_index("sample_id").y_prob.sort_index(), ((a + s) / 2).sort_index(), rtol=1e-9)


def test_headdata_subset_keeps_blocks_aligned() -> None:
    table = pd.DataFrame({"sample_id": ["a", "b", "c"], "patient_id": ["1", "2", "3"], "center": "A",
                          "split": ["train", "test", "train"], "y": [0.0, 1.0, 1.0]})
    data = HeadData(table, {"v": np.array([[0.0], [1.0], [2.0]]),
                            "r": Ragged(np.arange(4.0)[:, None], np.array([0, 1, 3, 4]))}, ["y"])
    train = data.split("train")
    assert train.blocks["v"][:, 0].tolist() == [0.0, 2.0]
    assert train.blocks["r"].item(1)[:, 0].tolist() == [3.0]


def rescaled(paths: dict[str, Path], root: Path, scales: dict[str, tuple[float, float]]) -> dict[str, Path]:
    """The same cohort with feature files multiplied and shifted as a frozen encoder's might be."""
    out = dict(paths)
    for name, (scale, shift) in scales.items():
        ids, x, offsets = read_features(paths[name])
        write_features(root / f"{name}.h5", ids, x * scale + shift, offsets=offsets)
        out[name] = root / f"{name}.h5"
    return out


@pytest.mark.parametrize("head", ["dsaf", "lstm_study"])
def test_neural_heads_do_not_depend_on_the_scale_of_their_features(tmp_path: Path, cohort: dict[str, Path],
                                                                   head: str) -> None:
    """Frozen-encoder features come at any scale: the heads z-score them with training statistics,
    so a hundredfold smaller or larger input learns the same model."""
    if head == "dsaf":
        spec, names = {"type": "dsaf", "inputs": ["a", "b", "clinical"], "width": 32, "train": FAST}, ["a", "b"]
        files = lambda p: files_for(p, "a", "b", "clinical")  # noqa: E731
    else:
        spec = {"type": "lstm_study", "inputs": ["seq"], "hidden": 16, "train": {**FAST, "batch_size": 8}}
        names, files = ["seq"], lambda p: {"features": {"seq": str(p["seq"])}}
    scaled = rescaled(cohort, tmp_path, {n: (s, o) for n, s, o in zip(names, (1e-2, 100.0), (0.5, -3.0), strict=False)})
    plain = fit(tmp_path / "plain", cohort, head, spec, files(cohort))
    other = fit(tmp_path / "scaled", scaled, head, spec, files(scaled))
    assert held_out_auc(other) > 0.8
    assert np.abs(plain.y_prob.to_numpy() - other.y_prob.to_numpy()).max() < 1e-3
