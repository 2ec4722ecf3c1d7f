"""The stage-2 encoders of the EHR study: events → time grid, notes → doc2vec (medflow.encoders)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from medflow.encoders.events import EventBinner, encode_events
from medflow.encoders.notes import embed_notes, encode_notes, fit_doc2vec, tokenize
from medflow.io.features import read_features

# ---------------------------------------------------------------- fixtures


def _splits(path: Path, rows: list[tuple[str, str]]) -> Path:
    frame = pd.DataFrame(rows, columns=["sample_id", "split"])
    frame.insert(1, "patient_id", [f"p{s}" for s in frame["sample_id"]])
    frame.insert(2, "center", "c1")
    frame["fold"] = -1
    frame.to_csv(path, index=False)
    return path


# train samples first in neither order nor id: the output must follow splits.csv, not the events file
SPLITS = [
    ("007", "test"),
    ("002", "train"),
    ("001", "train"),
    ("003", "val"),
    ("004", "train"),
    ("005", "test"),
    ("006", "val"),
]


def _events(seed: int = 0) -> pd.DataFrame:
    """Two numeric variables every sample except 006 (no events at all), a text-only result, hours in
    [0, 12]."""
    rng = np.random.default_rng(seed)
    rows = []
    for sample in ["001", "002", "003", "004", "005", "007"]:
        for _ in range(15):
            rows.append((sample, float(rng.uniform(0, 12)), "hr", float(rng.normal(80, 10)), None))
        for _ in range(4):
            rows.append((sample, float(rng.uniform(0, 12)), "lactate", float(rng.gamma(2.0, 1.0)), None))
    rows.append(("001", 3.0, "culture", np.nan, "positive"))
    frame = pd.DataFrame(rows, columns=["sample_id", "hours", "variable", "value", "value_text"])
    return frame.astype({"sample_id": "string", "variable": "string", "value_text": "string"})


def _write_events(folder: Path, events: pd.DataFrame) -> Path:
    # one file name everywhere: the ``modality`` attr is the input's stem
    path = folder / "ehr.parquet"
    folder.mkdir(exist_ok=True)
    events.to_parquet(path)
    return path


def _content(path: Path) -> dict[str, object]:
    """Every dataset and attribute of an HDF5 file except the input path (``source``)."""
    with h5py.File(path, "r") as f:
        out: dict[str, object] = {k: f[k][:] for k in f}
        out.update({f"attr:{k}": v for k, v in f.attrs.items() if k != "source"})
    return out


def _assert_same_content(a: Path, b: Path) -> None:
    ca, cb = _content(a), _content(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)


# ---------------------------------------------------------------- events


def test_binner_bins_standardises_fills_and_masks(caplog: pytest.LogCaptureFixture) -> None:
    train = pd.DataFrame(
        {
            "sample_id": ["a", "a", "a", "b", "b"],
            "hours": [1.0, 2.0, 9.0, 5.0, 3.0],
            "variable": ["hr", "hr", "hr", "hr", "note"],
            "value": [10.0, 20.0, 30.0, 40.0, np.nan],  # the NaN row is text-only: ignored, not a variable
        }
    )
    binner = EventBinner(window_hours=12, bin_hours=4).fit(train)
    assert binner.variables_ == ["hr"] and binner.n_steps == 3
    assert binner.channels == ["hr", "measured:hr"]
    # statistics of the clipped bin means a:[15, 30] b:[40] (clip at the training 0.5/99.5 percentiles)
    lo, hi = np.percentile([10, 20, 30, 40], [0.5, 99.5])
    cells = [(np.clip(10, lo, hi) + np.clip(20, lo, hi)) / 2, np.clip(30, lo, hi), np.clip(40, lo, hi)]
    assert binner.mean_[0] == pytest.approx(np.mean(cells)) and binner.std_[0] == pytest.approx(np.std(cells))

    new = pd.DataFrame(
        {
            "sample_id": ["b", "c", "c"],
            "hours": [5.0, 12.0, 1.0],
            "variable": ["hr", "hr", "spo2"],
            "value": [40.0, 25.0, 97.0],
        }
    )
    with caplog.at_level(logging.INFO, logger="medflow.encoders"):
        grid = binner.transform(new, ["c", "b", "d"])
    assert "unseen at fit time" in caplog.text and "spo2" in caplog.text
    assert grid.shape == (3, 3, 2) and grid.dtype == np.float32
    z = (np.array([np.clip(25, lo, hi), np.clip(40, lo, hi)]) - binner.mean_[0]) / binner.std_[0]
    # c: measured only at 12 h (the closed window's end → last bin); nothing to carry before it
    np.testing.assert_allclose(grid[0, :, 0], [0, 0, z[0]], rtol=1e-6)
    np.testing.assert_array_equal(grid[0, :, 1], [0, 0, 1])
    # b: measured in bin 1, carried forward into bin 2 (mask 0 there), 0 before
    np.testing.assert_allclose(grid[1, :, 0], [0, z[1], z[1]], rtol=1e-6)
    np.testing.assert_array_equal(grid[1, :, 1], [0, 1, 0])
    # d: no events → all zero
    assert not grid[2].any()


def test_binner_train_statistics_outlier_clipping_and_constant_variable() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    train = pd.DataFrame(
        {
            "sample_id": rng.integers(0, 100, n).astype(str),
            "hours": rng.uniform(0, 48, n),
            "variable": rng.choice(["hr", "sodium", "flag"], n),
            "value": rng.normal(100, 15, n),
        }
    )
    train.loc[train["variable"] == "flag", "value"] = 1.0  # constant: std 0 → floor, not inf
    train.loc[0, ["variable", "value"]] = ["hr", 1e6]  # a typo-sized outlier in training
    binner = EventBinner().fit(train)
    ids = sorted(train["sample_id"].unique())
    grid = binner.transform(train, ids)
    assert np.isfinite(grid).all()
    v = len(binner.variables_)
    for i, name in enumerate(binner.variables_):
        measured = grid[:, :, v + i] == 1
        values = grid[:, :, i][measured]
        assert abs(values.mean()) < 1e-5, name  # standardised with the training statistics
        if name != "flag":
            assert values.std() == pytest.approx(1.0, abs=1e-5), name
    hr = binner.variables_.index("hr")
    assert binner.hi_[hr] < 1e3  # the outlier does not set the clip limit (with > 200 values)...
    extreme = pd.DataFrame({"sample_id": ["x"], "hours": [1.0], "variable": ["hr"], "value": [1e9]})
    z = binner.transform(extreme, ["x"])[0, 0, hr]  # ...and an unseen extreme lands at the limit
    assert z == pytest.approx((binner.hi_[hr] - binner.mean_[hr]) / binner.std_[hr], rel=1e-6)


def test_encode_events_writes_the_grid_in_splits_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    splits = _splits(tmp_path / "splits.csv", SPLITS)
    events = _write_events(tmp_path, _events())
    with caplog.at_level(logging.INFO, logger="medflow.encoders"):
        out = encode_events(events, splits, tmp_path / "ehr-events.h5", window_hours=12, bin_hours=4)
    assert "1 of 7 samples have no usable events" in caplog.text
    assert "without a numeric value" in caplog.text
    ids, features, offsets = read_features(out)
    assert ids == [s for s, _ in SPLITS]
    assert features.shape == (7 * 3, 4)
    np.testing.assert_array_equal(offsets, np.arange(8) * 3)
    grid = features.reshape(7, 3, 4)
    assert not grid[ids.index("006")].any()  # no events: zero values, mask 0
    assert grid[ids.index("001"), :, 2:].any()
    with h5py.File(out, "r") as f:
        attrs = dict(f.attrs)
    assert json.loads(attrs["variables"]) == ["hr", "lactate"]  # the text-only "culture" is no variable
    assert attrs["fitted_on"] == "train" and attrs["n_train"] == 3 and attrs["n_steps"] == 3
    assert attrs["bin_hours"] == 4 and attrs["window_hours"] == 12 and attrs["feature_dim"] == 4
    assert attrs["model"] == "ehr-events" and attrs["encoder"] == "events"
    assert set(json.loads(attrs["stats"])["hr"]) == {"mean", "std", "clip_low", "clip_high"}


def test_encode_events_ignores_row_order(tmp_path: Path) -> None:
    splits = _splits(tmp_path / "splits.csv", SPLITS)
    events = _events()
    a = encode_events(
        _write_events(tmp_path / "a", events), splits, tmp_path / "a" / "enc.h5", window_hours=12, bin_hours=4
    )
    shuffled = events.sample(frac=1.0, random_state=3).reset_index(drop=True)
    b = encode_events(
        _write_events(tmp_path / "b", shuffled),
        splits,
        tmp_path / "b" / "enc.h5",
        window_hours=12,
        bin_hours=4,
    )
    _assert_same_content(a, b)


def test_encode_events_is_fitted_on_train_only(tmp_path: Path) -> None:
    splits = _splits(tmp_path / "splits.csv", SPLITS)
    events = _events()
    a = encode_events(
        _write_events(tmp_path / "a", events), splits, tmp_path / "a" / "enc.h5", window_hours=12, bin_hours=4
    )
    held_out = events["sample_id"].isin(["003", "005", "006", "007"])
    changed = events.copy()
    changed.loc[held_out, "value"] = changed.loc[held_out, "value"] * 1000 + 5e4
    extra = pd.DataFrame(
        {"sample_id": ["005"], "hours": [1.0], "variable": ["troponin"], "value": [9.0], "value_text": [None]}
    ).astype(changed.dtypes.to_dict())
    changed = pd.concat([changed, extra], ignore_index=True)
    b = encode_events(
        _write_events(tmp_path / "b", changed),
        splits,
        tmp_path / "b" / "enc.h5",
        window_hours=12,
        bin_hours=4,
    )
    ids, fa, _ = read_features(a)
    _, fb, _ = read_features(b)
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        for key in ("stats", "variables", "channels", "n_train_events"):
            assert f.attrs[key] == g.attrs[key], key
    grid_a, grid_b = fa.reshape(len(ids), 3, 4), fb.reshape(len(ids), 3, 4)
    for i, (sample, split) in enumerate(SPLITS):
        if split == "train":
            np.testing.assert_array_equal(grid_a[i], grid_b[i])
        elif sample in ("003", "005", "007"):
            assert not np.array_equal(grid_a[i], grid_b[i])  # the change is real, just not learnt from


def test_events_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whole multiple"):
        EventBinner(window_hours=48, bin_hours=5)
    with pytest.raises(ValueError, match=r"\['value'\]"):
        EventBinner().fit(pd.DataFrame({"sample_id": ["a"], "hours": [1.0], "variable": ["hr"]}))
    with pytest.raises(ValueError, match="no numeric training events"):
        EventBinner().fit(
            pd.DataFrame({"sample_id": ["a"], "hours": [1.0], "variable": ["hr"], "value": [np.nan]})
        )
    with pytest.raises(RuntimeError, match="not fitted"):
        EventBinner().transform(_events(), ["001"])
    events = _write_events(tmp_path, _events())
    no_train = _splits(tmp_path / "no_train.csv", [("001", "val"), ("002", "test")])
    with pytest.raises(ValueError, match="no sample in split 'train'"):
        encode_events(events, no_train, tmp_path / "x.h5", window_hours=12, bin_hours=4)
    empty_train = _splits(tmp_path / "empty_train.csv", [("006", "train"), ("001", "val")])
    with pytest.raises(ValueError, match="no numeric training events"):
        encode_events(events, empty_train, tmp_path / "x.h5", window_hours=12, bin_hours=4)
    assert not (tmp_path / "x.h5").exists()


# ---------------------------------------------------------------- notes

SHARED = [
    "patient",
    "admitted",
    "overnight",
    "stable",
    "vitals",
    "reviewed",
    "plan",
    "discussed",
    "family",
    "nursing",
]
CLASS_WORDS = [
    ["cough", "sputum", "wheeze", "infiltrate", "antibiotics", "oxygen", "saturation", "chest"],
    ["fracture", "cast", "swelling", "orthopaedic", "splint", "bruising", "ankle", "wrist"],
]


def _note(rng: np.random.Generator, label: int, extra: str = "") -> str:
    words = list(rng.choice(SHARED, 8)) + list(rng.choice(CLASS_WORDS[label], 6))
    rng.shuffle(words)
    return " ".join(words) + (f" {extra}" if extra else "") + "."


def _notes(seed: int = 0, test_text: str | None = None) -> pd.DataFrame:
    """Two or three notes per sample except 006 (none); hours deliberately not in note_index order."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (sample, split) in enumerate(SPLITS):
        if sample == "006":
            continue
        for note_index, hours in enumerate([30.0, 2.0, 2.0][: 2 + (k + 1) % 2]):
            text = _note(rng, k % 2)  # drawn even when replaced, so the other notes stay the same
            if test_text and split == "test":
                text = test_text
            rows.append((sample, note_index, hours, text))
    frame = pd.DataFrame(rows, columns=["sample_id", "note_index", "hours", "text"])
    return frame.astype({"sample_id": "string", "text": "string"})


def _write_notes(folder: Path, notes: pd.DataFrame) -> Path:
    path = folder / "notes.parquet"
    folder.mkdir(exist_ok=True)
    notes.to_parquet(path)
    return path


ENCODE_NOTES = {"vector_size": 8, "epochs": 10, "min_count": 2, "seed": 0}


def test_encode_notes_writes_ordered_sequences(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    splits = _splits(tmp_path / "splits.csv", SPLITS)
    notes = _notes()
    with caplog.at_level(logging.INFO, logger="medflow.encoders"):
        out = encode_notes(
            _write_notes(tmp_path, notes), splits, tmp_path / "notes-doc2vec.h5", **ENCODE_NOTES
        )
    assert "1 of 7 samples have no notes" in caplog.text
    ids, features, offsets = read_features(out)
    assert ids == [s for s, _ in SPLITS]
    counts = notes.groupby("sample_id").size()
    expected = [int(counts.get(s, 0)) for s in ids]
    np.testing.assert_array_equal(np.diff(offsets), expected)
    assert features.shape == (len(notes), 8) and offsets[-1] == len(notes)
    assert offsets[ids.index("006")] == offsets[ids.index("006") + 1]  # zero-length sequence
    with h5py.File(out, "r") as f:
        hours, note_index = f["hours"][:], f["note_index"][:]
        attrs = dict(f.attrs)
    # within a sample: by hours, then note_index (the 2.0 h notes 1, 2 before the 30 h note 0)
    first = slice(offsets[0], offsets[1])  # sample 007 has three notes
    np.testing.assert_array_equal(hours[first], [2.0, 2.0, 30.0])
    np.testing.assert_array_equal(note_index[first], [1, 2, 0])
    assert attrs["fitted_on"] == "train" and attrs["vector_size"] == 8 and attrs["encoder"] == "doc2vec"
    train = [s for s, split in SPLITS if split == "train"]
    assert attrs["n_train_notes"] == int(counts[train].sum()) and attrs["n_train"] == len(train)
    assert attrs["vocabulary_size"] > 0 and attrs["model"] == "notes-doc2vec"


def test_encode_notes_ignores_row_order(tmp_path: Path) -> None:
    splits = _splits(tmp_path / "splits.csv", SPLITS)
    notes = _notes()
    a = encode_notes(_write_notes(tmp_path / "a", notes), splits, tmp_path / "a" / "enc.h5", **ENCODE_NOTES)
    shuffled = notes.sample(frac=1.0, random_state=5).reset_index(drop=True)
    b = encode_notes(
        _write_notes(tmp_path / "b", shuffled), splits, tmp_path / "b" / "enc.h5", **ENCODE_NOTES
    )
    _assert_same_content(a, b)


def test_encode_notes_is_fitted_on_train_only(tmp_path: Path) -> None:
    splits = _splits(tmp_path / "splits.csv", SPLITS)
    a = encode_notes(
        _write_notes(tmp_path / "a", _notes()), splits, tmp_path / "a" / "enc.h5", **ENCODE_NOTES
    )
    leak = "zygomycosis " * 5 + "plasmapheresis " * 5 + "cough " * 20
    b = encode_notes(
        _write_notes(tmp_path / "b", _notes(test_text=leak)),
        splits,
        tmp_path / "b" / "enc.h5",
        **ENCODE_NOTES,
    )
    _, fa, offsets = read_features(a)
    _, fb, offsets_b = read_features(b)
    np.testing.assert_array_equal(offsets, offsets_b)
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        assert f.attrs["vocabulary_size"] == g.attrs["vocabulary_size"]
        assert f.attrs["n_train_notes"] == g.attrs["n_train_notes"]
    for i, (_, split) in enumerate(SPLITS):
        rows = slice(offsets[i], offsets[i + 1])
        if split == "train":
            np.testing.assert_array_equal(fa[rows], fb[rows])  # bit-identical
        elif split == "test":
            assert not np.array_equal(fa[rows], fb[rows])
    # the vocabulary is that of the training notes: a word only in test notes is not in it
    notes = _notes(test_text=leak)
    train_ids = [s for s, split in SPLITS if split == "train"]
    train_texts = notes.loc[notes["sample_id"].isin(train_ids), "text"].tolist()
    model = fit_doc2vec(train_texts, vector_size=8, epochs=5, min_count=2)
    assert "zygomycosis" not in model.wv.key_to_index and "plasmapheresis" not in model.wv.key_to_index
    counts = pd.Series([w for t in train_texts for w in tokenize(t)]).value_counts()
    assert set(model.wv.key_to_index) == set(counts[counts >= 2].index)


def test_notes_errors(tmp_path: Path) -> None:
    splits = _splits(tmp_path / "splits.csv", SPLITS)
    bad = _write_notes(tmp_path / "bad", _notes().drop(columns=["hours"]))
    with pytest.raises(ValueError, match=r"\['hours'\]"):
        encode_notes(bad, splits, tmp_path / "x.h5")
    notes = _write_notes(tmp_path, _notes())
    with pytest.raises(ValueError, match="no sample in split 'train'"):
        encode_notes(notes, _splits(tmp_path / "s1.csv", [("001", "val")]), tmp_path / "x.h5")
    with pytest.raises(ValueError, match="none of the 1 training samples has a note"):
        encode_notes(
            notes, _splits(tmp_path / "s2.csv", [("006", "train"), ("001", "val")]), tmp_path / "x.h5"
        )
    with pytest.raises(ValueError, match="empty training corpus"):
        fit_doc2vec(["one unique word", "", "42 7"], min_count=2)
    assert not (tmp_path / "x.h5").exists()


def test_embed_notes_is_gensims_inference_with_a_stable_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """embed_notes re-implements Doc2Vec.infer_vector only to seed it stably: with gensim's own function
    given the same start vector and random state, the vectors agree."""
    import gensim.models.doc2vec as gensim_doc2vec

    from medflow.encoders.notes import stable_hash

    rng = np.random.default_rng(0)
    model = fit_doc2vec([_note(rng, i % 2) for i in range(30)], vector_size=8, epochs=5)
    text = _note(rng, 1, "unknownword")
    ours = embed_notes(model, [text], seed=3)[0]
    words = tokenize(text)
    key = stable_hash(f"3\0{' '.join(words)}")
    start = ((np.random.default_rng(key).random(8) - 0.5) / 8).astype(np.float32)
    monkeypatch.setattr(
        gensim_doc2vec, "pseudorandom_weak_vector", lambda size, seed_string=None: start.copy()
    )
    model.random = np.random.RandomState(key)
    np.testing.assert_array_equal(ours, model.infer_vector(words))
    # same text → same vector whatever was embedded before; no known word → zero vector
    again = embed_notes(model, ["zzz qqq", _note(rng, 0), text], seed=3)
    np.testing.assert_array_equal(again[2], ours)
    assert not again[0].any()


_FIT_IN_SUBPROCESS = """
import sys, numpy as np
from medflow.encoders.notes import embed_notes, fit_doc2vec
texts = [line for line in open(sys.argv[1]).read().split("\\n") if line]
model = fit_doc2vec(texts[:40], vector_size=8, epochs=5, seed=1)
np.save(sys.argv[2], np.concatenate([embed_notes(model, texts, seed=1), model.dv.vectors]))
"""


def test_doc2vec_is_deterministic_across_processes(tmp_path: Path) -> None:
    """Different PYTHONHASHSEED values (the hash() gensim seeds inference with) give identical vectors."""
    rng = np.random.default_rng(0)
    (tmp_path / "texts.txt").write_text("\n".join(_note(rng, i % 2) for i in range(50)))
    results = []
    for hash_seed in ("1", "2024"):
        out = tmp_path / f"v{hash_seed}.npy"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-c", _FIT_IN_SUBPROCESS, str(tmp_path / "texts.txt"), str(out)],
            check=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        results.append(np.load(out))
    assert results[0].shape == (50 + 40, 8) and np.abs(results[0]).sum() > 0
    np.testing.assert_array_equal(results[0], results[1])


def test_doc2vec_vectors_carry_signal() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(200) % 2, rng.permutation(np.arange(40) % 2)
    train = [_note(rng, y) for y in y_train]
    test = [_note(rng, y) for y in y_test]
    model = fit_doc2vec(train, vector_size=16, epochs=20, seed=0)  # the study's epochs
    clf = LogisticRegression(max_iter=1000).fit(embed_notes(model, train), y_train)
    auc = roc_auc_score(y_test, clf.predict_proba(embed_notes(model, test))[:, 1])
    assert auc > 0.8, auc


# ---------------------------------------------------------------- the observation window


def test_notes_after_the_window_never_reach_doc2vec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Raw note files → ingest (48 h window) → doc2vec: a discharge note written at 96 h changes neither
    the vocabulary nor any vector; encode_notes reads the ingested table, never the note files."""
    from medflow.encoders import notes as notes_module
    from medflow.ingest import ingest_modality

    models = []
    fit = notes_module.fit_doc2vec

    def spy(texts, **kw):
        models.append(fit(texts, **kw))
        return models[-1]

    monkeypatch.setattr(notes_module, "fit_doc2vec", spy)
    splits = _splits(tmp_path / "splits.csv", SPLITS)
    cohorts = {}
    for variant in ("with_late", "without"):
        root = tmp_path / variant
        rows = []
        for k, (sample, _) in enumerate(SPLITS):
            folder = root / "notes" / sample
            folder.mkdir(parents=True)
            for hours in (2.0, 30.0):
                (folder / f"{hours:05.1f}_nursing.txt").write_text(_note(np.random.default_rng([k, int(hours)]), k % 2))
            if variant == "with_late":  # the outcome, written after the window
                (folder / "096_discharge.txt").write_text("Discharge summary: patient expired. Expired at 04:10.")
            rows.append({"sample_id": sample, "patient_id": f"p{sample}", "center": "c1", "notes": f"notes/{sample}"})
        out = root / "ingest" / "notes.parquet"
        ingest_modality(pd.DataFrame(rows), root, "notes", {"kind": "notes", "window_hours": 48}, out,
                        root / "ingest" / "notes.problems.csv", progress=False)
        assert not pd.read_parquet(out)["text"].str.contains("xpired").any()
        # the raw files may go: the encoder needs nothing but the ingested table
        (root / "notes").rename(root / "gone")
        cohorts[variant] = encode_notes(out, splits, root / "notes-doc2vec.h5", **ENCODE_NOTES)
    with_late, without = models
    assert "expired" not in with_late.wv.key_to_index and "discharge" not in with_late.wv.key_to_index
    assert set(with_late.wv.key_to_index) == set(without.wv.key_to_index)
    _assert_same_content(cohorts["with_late"], cohorts["without"])
