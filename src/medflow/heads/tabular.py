"""Turning a head's inputs into one numeric matrix: clinical tables standardised / one-hot encoded
with statistics fitted on the training split only, feature vectors concatenated in input order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from medflow.heads.inputs import HeadData, Ragged


def _categorical(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


class TableEncoder:
    """Numbers: median imputation then z-score; strings/categories: most-frequent imputation then
    one-hot (levels unseen in training map to all zeros). ``fit`` sees training rows only."""

    def fit(self, frame: pd.DataFrame) -> TableEncoder:
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


class DesignMatrix:
    """Concatenation of a head's inputs as one row per sample: vector features as they are, tables
    through a :class:`TableEncoder` fitted on the training rows."""

    def __init__(self, inputs: Sequence[str]) -> None:
        self.inputs = list(inputs)

    def fit(self, data: HeadData) -> DesignMatrix:
        self.encoders_: dict[str, TableEncoder] = {}
        for name in self.inputs:
            block = data.blocks[name]
            if isinstance(block, Ragged):
                raise ValueError(
                    f"input {name!r} is a sequence (per slice/per note); classical heads need one vector per "
                    "sample: use a sequence head (lstm_image, lstm_study) for it"
                )
            if isinstance(block, pd.DataFrame):
                self.encoders_[name] = TableEncoder().fit(block)
        return self

    def transform(self, data: HeadData) -> np.ndarray:
        parts = []
        for name in self.inputs:
            block = data.blocks[name]
            if name in self.encoders_:
                parts.append(self.encoders_[name].transform(block))
            else:
                parts.append(np.asarray(block, dtype=np.float32))
        return np.hstack(parts) if parts else np.zeros((len(data), 0), dtype=np.float32)

    def fit_transform(self, data: HeadData) -> np.ndarray:
        return self.fit(data).transform(data)
