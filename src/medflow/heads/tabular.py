"""Turning a head's inputs into one numeric matrix: clinical tables standardised / one-hot encoded
with statistics of the rows the encoder is fitted on, feature vectors concatenated in input order.

Classical heads keep the encoder inside their searched pipeline (:func:`design_frame` is the raw,
unfitted side-by-side view, :func:`design_encoder` the step that encodes it), so each
cross-validation fold fits it on that fold's training part only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from medflow.heads.inputs import Block, HeadData, Ragged
from medflow.heads.registry import list_head_types


def _categorical(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


class TableEncoder(TransformerMixin, BaseEstimator):
    """Numbers: median imputation then z-score; strings/categories: most-frequent imputation then
    one-hot (levels unseen in training map to all zeros). ``fit`` sees training rows only."""

    def fit(self, frame: pd.DataFrame, y: object = None) -> TableEncoder:
        frame = self._normalise(frame)
        self.categorical_ = [c for c in frame.columns if _categorical(frame[c])]
        self.numeric_ = [c for c in frame.columns if c not in self.categorical_]
        self.transformer_ = ColumnTransformer(
            [
                ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), self.numeric_),
                ("categorical", make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False)), self.categorical_),
            ],
            sparse_threshold=0.0,
        )
        self.transformer_.fit(frame)
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.transformer_.transform(self._normalise(frame)), dtype=np.float32)

    @property
    def feature_names(self) -> list[str]:
        return [str(n) for n in self.transformer_.get_feature_names_out()]

    @staticmethod
    def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
        """Nullable ints/floats → float64 with NaN, everything else → object with None (what the
        sklearn imputers understand)."""
        out = {}
        for column in frame.columns:
            series = frame[column]
            if _categorical(series):
                out[column] = series.astype(object).where(series.notna(), None)
            else:
                out[column] = pd.to_numeric(series, errors="coerce").astype("float64")
        return pd.DataFrame(out, index=frame.index)


def _columns(name: str, block: Block) -> list[str]:
    """The design-frame columns of input ``name``: ``{name}.{column}`` of a table, ``{name}[i]`` of a vector."""
    if isinstance(block, Ragged):
        raise ValueError(
            f"input {name!r} is a sequence (per slice/per note); classical heads need one vector per "
            f"sample: use a sequence head ({', '.join(list_head_types(sequences=True))}) for it"
        )
    if isinstance(block, pd.DataFrame):
        return [f"{name}.{column}" for column in block.columns]
    return [f"{name}[{i}]" for i in range(np.asarray(block).shape[1])]


def design_frame(data: HeadData, inputs: Sequence[str]) -> pd.DataFrame:
    """A head's inputs side by side, one row per sample, nothing fitted: table columns keep their
    dtypes (so :class:`TableEncoder` still tells numbers from categories), vectors become float32 columns."""
    parts = []
    for name in inputs:
        block = data.blocks[name]
        columns = _columns(name, block)
        if isinstance(block, pd.DataFrame):
            parts.append(block.set_axis(columns, axis=1).reset_index(drop=True))
        else:
            parts.append(pd.DataFrame(np.asarray(block, dtype=np.float32), columns=columns))
    return pd.concat(parts, axis=1)


def design_encoder(data: HeadData, inputs: Sequence[str]) -> ColumnTransformer:
    """The unfitted step that turns a :func:`design_frame` into one matrix: each table through its
    own :class:`TableEncoder`, vectors as they are, in input order."""
    steps = []
    for name in inputs:
        block = data.blocks[name]
        steps.append((name, TableEncoder() if isinstance(block, pd.DataFrame) else "passthrough", _columns(name, block)))
    return ColumnTransformer(steps, sparse_threshold=0.0)
