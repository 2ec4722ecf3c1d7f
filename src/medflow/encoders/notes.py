"""Clinical notes → one doc2vec vector per note (the ``doc2vec`` encoder of stage 2).

The model (PV-DBOW with interleaved skip-gram word training, ``dm=0, dbow_words=1``: on small corpora
plain PV-DBOW barely moves from its random start in 20 epochs, the word training gives the shared
output layer far more updates — see tests/test_encoders.py's signal test) is trained on the notes of
the training split only; every note of every split, training notes included, is then embedded the
same way, by inference against the frozen model, so training and held-out vectors come from one
procedure. Vectors are computed once here and cached in the features file.

Determinism: gensim's ``Doc2Vec`` is reproducible with ``workers=1`` and a fixed ``seed``, but its
``infer_vector`` starts each document from a vector seeded with Python's ``hash()`` of the text, and
str hashes are randomised per process (PYTHONHASHSEED), and it draws negative samples from
``model.random``, whose state depends on every document inferred before. :func:`embed_notes` therefore
re-implements that short loop with a start vector and a ``model.random`` both seeded from a stable
(blake2b) hash of the seed and the text: a note's vector depends on the model and the note alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from gensim.models.doc2vec import Doc2Vec, TaggedDocument
from gensim.models.doc2vec_inner import train_document_dbow, train_document_dm, train_document_dm_concat
from gensim.utils import simple_preprocess

from medflow.encoders import read_splits, require_columns
from medflow.io.atomic import atomic_path
from medflow.io.features import write_features
from medflow.logs import progress_bar

log = logging.getLogger(__name__)

NOTE_COLUMNS = ("sample_id", "note_index", "hours", "text")


def stable_hash(text: str) -> int:
    """A 32-bit hash of ``text`` that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "little")


def tokenize(text: str | None) -> list[str]:
    """The tokens doc2vec sees: lower-cased alphabetic words of 2–15 letters (gensim's simple_preprocess)."""
    return simple_preprocess(text) if isinstance(text, str) else []


def fit_doc2vec(
    texts: Sequence[str],
    *,
    vector_size: int = 64,
    epochs: int = 20,
    min_count: int = 2,
    seed: int = 0,
) -> Doc2Vec:
    """Train PV-DBOW doc2vec (with skip-gram word training) on ``texts`` (the training split's notes),
    single-threaded and seeded so that two runs, in any process, give identical models."""
    tokens = [tokenize(t) for t in texts]
    documents = [TaggedDocument(words, [i]) for i, words in enumerate(tok for tok in tokens if tok)]
    if len(documents) < len(tokens):
        log.info(
            "doc2vec: %d of %d training notes have no tokens, skipped",
            len(tokens) - len(documents),
            len(tokens),
        )
    counts = Counter(word for doc in documents for word in doc.words)
    if not any(c >= min_count for c in counts.values()):
        raise ValueError(
            f"doc2vec: empty training corpus: {len(documents)} non-empty training notes, no word occurs "
            f"min_count={min_count} times"
        )
    # workers=1: with several threads the order of updates, and so the vectors, vary run to run.
    # hashfxn: gensim's default is hash(), randomised per process; its seed-based init no longer uses it
    # in gensim 4.4, but any code path that does gets a stable hash.
    model = Doc2Vec(
        vector_size=vector_size,
        min_count=min_count,
        epochs=epochs,
        seed=seed,
        workers=1,
        dm=0,
        dbow_words=1,
        hashfxn=stable_hash,
    )
    model.build_vocab(documents)
    model.train(documents, total_examples=len(documents), epochs=epochs)
    log.info(
        "doc2vec: trained on %d notes, vocabulary %d words, %d epochs", len(documents), len(model.wv), epochs
    )
    return model


def embed_notes(
    model: Doc2Vec, texts: Sequence[str], *, seed: int = 0, epochs: int | None = None
) -> np.ndarray:
    """(n, vector_size) float32: one inferred vector per text, deterministic per (model, seed, text).

    A text without any word of the model's vocabulary gets the zero vector (inference has nothing to
    learn from; gensim would return its random start vector)."""
    epochs = epochs or model.epochs
    size = model.dv.vector_size
    out = np.zeros((len(texts), size), dtype=np.float32)
    saved_random = model.random
    unknown = 0
    try:
        for row, text in enumerate(progress_bar(texts, desc="doc2vec infer", unit="note")):
            words = tokenize(text)
            if not any(w in model.wv.key_to_index for w in words):
                unknown += 1
                continue
            key = stable_hash(f"{seed}\0{' '.join(words)}")
            # the start vector as gensim draws it (uniform in ±0.5/size), but from a stable seed
            vector = (
                ((np.random.default_rng(key).random(size) - 0.5) / size).astype(np.float32).reshape(1, size)
            )
            model.random = np.random.RandomState(key)  # negative sampling / downsampling draws
            lockf = np.ones(1, dtype=np.float32)
            work = np.zeros(model.layer1_size, dtype=np.float32)
            neu1 = np.zeros(model.layer1_size, dtype=np.float32)
            alpha, min_alpha = model.alpha, model.min_alpha
            delta = (alpha - min_alpha) / max(epochs - 1, 1)
            # the loop of gensim's Doc2Vec.infer_vector (4.x): frozen words and output layer
            for _ in range(epochs):
                if model.sg:
                    train_document_dbow(
                        model,
                        words,
                        [0],
                        alpha,
                        work,
                        learn_words=False,
                        learn_hidden=False,
                        doctag_vectors=vector,
                        doctags_lockf=lockf,
                    )
                else:
                    train_dm = train_document_dm_concat if model.dm_concat else train_document_dm
                    train_dm(
                        model,
                        words,
                        [0],
                        alpha,
                        work,
                        neu1,
                        learn_words=False,
                        learn_hidden=False,
                        doctag_vectors=vector,
                        doctags_lockf=lockf,
                    )
                alpha -= delta
            out[row] = vector[0]
    finally:
        model.random = saved_random
    if unknown:
        log.info("doc2vec: %d of %d notes have no word of the vocabulary (zero vector)", unknown, len(texts))
    return out


def encode_notes(
    notes_path: str | Path,
    splits_path: str | Path,
    out_path: str | Path,
    *,
    vector_size: int = 64,
    epochs: int = 20,
    min_count: int = 2,
    seed: int = 0,
) -> Path:
    """Fit doc2vec on the notes of the ``train`` samples of splits.csv, embed every note of every sample
    of splits.csv (samples in splits order, notes by ``hours`` then ``note_index``) and write the
    features contract: ``features`` S×vector_size with ``offsets`` N+1 (a sample without notes has a
    zero-length sequence), plus per-note ``hours`` (float32, NaN if unknown) and ``note_index`` (int64,
    −1 if unknown) datasets (S)."""
    splits = read_splits(splits_path)
    notes = pd.read_parquet(notes_path)
    require_columns(notes, NOTE_COLUMNS, f"notes file {notes_path}")
    ids = splits["sample_id"].tolist()
    train_ids = set(splits.loc[splits["split"] == "train", "sample_id"])
    if not train_ids:
        raise ValueError(f"{splits_path} has no sample in split 'train': nothing to fit doc2vec on")
    frame = pd.DataFrame(
        {
            "order": pd.Index(ids).get_indexer(notes["sample_id"].astype(str)),
            "hours": pd.to_numeric(notes["hours"], errors="coerce").to_numpy(np.float64, na_value=np.nan),
            "note_index": pd.to_numeric(notes["note_index"], errors="coerce").to_numpy(
                np.float64, na_value=np.nan
            ),
            "text": notes["text"].astype(object).where(notes["text"].notna(), "").to_numpy(),
        }
    )
    outside = frame["order"] < 0
    if outside.any():
        log.warning("notes: %d notes of samples not in %s ignored", int(outside.sum()), splits_path)
        frame = frame[~outside]
    if frame["hours"].isna().any():
        log.warning(
            "notes: %d notes without hours placed after the sample's timed notes",
            int(frame["hours"].isna().sum()),
        )
    # sorting on content too (text) makes the order, and so the file, independent of the input's row order
    frame = frame.sort_values(
        ["order", "hours", "note_index", "text"], kind="stable", na_position="last", ignore_index=True
    )
    texts = frame["text"].tolist()
    is_train = splits["split"].eq("train").to_numpy(bool, na_value=False)[frame["order"].to_numpy()]
    train_texts = [t for t, keep in zip(texts, is_train, strict=True) if keep]
    if not train_texts:
        raise ValueError(
            f"notes: none of the {len(train_ids)} training samples has a note: nothing to fit doc2vec on"
        )
    model = fit_doc2vec(train_texts, vector_size=vector_size, epochs=epochs, min_count=min_count, seed=seed)
    vectors = embed_notes(model, texts, seed=seed)
    lengths = np.bincount(frame["order"].to_numpy(), minlength=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_without = int((lengths == 0).sum())
    if n_without:
        log.info("notes: %d of %d samples have no notes (zero-length sequence)", n_without, len(ids))
    attrs: dict[str, Any] = {
        "model": Path(out_path).stem,
        "modality": Path(notes_path).stem,
        "source": str(notes_path),
        "encoder": "doc2vec",
        "vector_size": vector_size,
        "epochs": epochs,
        "min_count": min_count,
        "seed": seed,
        "doc2vec": json.dumps(
            {
                "dm": model.dm,
                "dbow_words": model.dbow_words,
                "window": model.window,
                "negative": model.negative,
                "sample": model.sample,
                "tokenizer": "gensim.utils.simple_preprocess",
            }
        ),
        "fitted_on": "train",
        "n_train": len(train_ids),
        "n_train_notes": len(train_texts),
        "vocabulary_size": len(model.wv),
        "n_notes": len(texts),
        "n_without_notes": n_without,
    }
    # per-note times go into the same file; writing into our own temporary keeps the whole file atomic
    with atomic_path(out_path) as tmp:
        write_features(tmp, ids, vectors, offsets=offsets, attrs=attrs)
        with h5py.File(tmp, "a") as f:
            f.create_dataset("hours", data=frame["hours"].to_numpy(np.float32))
            f.create_dataset("note_index", data=frame["note_index"].fillna(-1).to_numpy(np.int64))
    log.info("notes: wrote %s: %d notes of %d samples × %d", out_path, len(texts), len(ids), vector_size)
    return Path(out_path)
