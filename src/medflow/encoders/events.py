"""EHR events → a fixed-size time grid per sample (the ``events`` encoder of stage 2).

The window ``[0, window_hours]`` is cut into ``T = window_hours / bin_hours`` bins. For every
variable seen in the *training* events a bin holds two channels:

- the value: the mean of the bin's measurements, clipped to the training 0.5–99.5 percentiles and
  standardised with the training mean/std of such bin means; carried forward from the last measured
  bin of the same sample; 0 (the training mean) before the first measurement;
- the mask: 1 where the variable was measured in that bin, else 0 — so a model can tell a measured
  value from a carried or imputed one.

Channels are ordered ``[values of the V variables, masks of the V variables]`` (variables sorted).
Rows whose ``value`` is NaN (text-only results such as ``"positive"``) are ignored: there is no
numeric scale to standardise them on and the ingest keeps their text in ``value_text``; they are
counted in the log. All statistics come from the training split only, so validation/test data never
shape the encoding.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medflow.encoders import read_splits, require_columns
from medflow.io.features import write_features

log = logging.getLogger(__name__)

EVENT_COLUMNS = ("sample_id", "hours", "variable", "value")
CLIP_PERCENTILES = (0.5, 99.5)
# A constant training variable has std 0; the floor (relative to its scale) keeps its z-scores finite
# and stops float noise in a near-constant variable from blowing up unseen values.
STD_FLOOR_RELATIVE = 1e-3


class EventBinner:
    """Bin, clip, standardise, forward-fill and mask EHR events; scikit-learn style ``fit``/``transform``.

    ``variables`` restricts the encoder to those names (the fitted list is still those seen in the
    training events, sorted); ``None`` takes every variable seen at fit time.
    """

    def __init__(
        self, window_hours: float = 48, bin_hours: float = 4, variables: Sequence[str] | None = None
    ) -> None:
        if not (window_hours > 0 and bin_hours > 0):
            raise ValueError(f"window_hours ({window_hours}) and bin_hours ({bin_hours}) must be positive")
        steps = window_hours / bin_hours
        if not math.isclose(steps, round(steps), rel_tol=0, abs_tol=1e-9):
            raise ValueError(
                f"window_hours ({window_hours}) must be a whole multiple of bin_hours ({bin_hours})"
            )
        self.window_hours = float(window_hours)
        self.bin_hours = float(bin_hours)
        self.variables = None if variables is None else [str(v) for v in variables]

    @property
    def n_steps(self) -> int:
        """T, the number of time bins."""
        return round(self.window_hours / self.bin_hours)

    @property
    def channels(self) -> list[str]:
        """Names of the 2V feature channels: values first, then the masks."""
        self._check_fitted()
        return [*self.variables_, *(f"measured:{v}" for v in self.variables_)]

    def fit(self, events: pd.DataFrame) -> EventBinner:
        """Learn the variables and their clip limits and mean/std from (training) ``events``."""
        rows = self._numeric_rows(events, "training events")
        if self.variables is not None:
            unknown = sorted(set(self.variables) - set(rows["variable"]))
            if unknown:
                log.warning(
                    "events: requested variables never measured in the training events, dropped: %s", unknown
                )
            rows = rows[rows["variable"].isin(self.variables)]
        if rows.empty:
            raise ValueError("events: no numeric training events to fit on (empty training corpus)")
        self.variables_ = sorted(rows["variable"].unique().tolist())
        var = pd.Index(self.variables_).get_indexer(rows["variable"])
        values = rows["value"].to_numpy(np.float64)
        n_vars = len(self.variables_)
        self.lo_ = np.empty(n_vars)
        self.hi_ = np.empty(n_vars)
        for v in range(n_vars):
            # order-free, so row order cannot change them; with < 200 values the 99.5th percentile
            # interpolates towards the maximum, so clipping only bites on well-measured variables
            self.lo_[v], self.hi_[v] = np.percentile(values[var == v], CLIP_PERCENTILES)
        # The statistics are those of the quantity the grid holds (clipped bin means), so training
        # encodings come out with mean 0 / std 1 per variable over measured bins.
        samples, sample_code = np.unique(rows["sample_id"].to_numpy(str), return_inverse=True)
        cell = (sample_code * self.n_steps + self._bins(rows["hours"].to_numpy(np.float64))) * n_vars + var
        cells, inverse = np.unique(cell, return_inverse=True)
        clipped = np.clip(values, self.lo_[var], self.hi_[var])
        means = np.bincount(inverse, weights=clipped, minlength=len(cells)) / np.bincount(
            inverse, minlength=len(cells)
        )
        cell_var = cells % n_vars
        self.mean_ = np.array([means[cell_var == v].mean() for v in range(n_vars)])
        std = np.array([means[cell_var == v].std() for v in range(n_vars)])
        self.std_ = np.maximum(std, STD_FLOOR_RELATIVE * np.maximum(np.abs(self.mean_), 1.0))
        self.n_train_samples_ = len(samples)
        self.n_train_events_ = len(rows)
        log.info("events: fitted %d variables on %d events of %d samples", n_vars, len(rows), len(samples))
        return self

    def transform(self, events: pd.DataFrame, sample_ids: Sequence[str]) -> np.ndarray:
        """(N, T, 2V) float32 grid for ``sample_ids`` in that order; samples without events get zeros."""
        self._check_fitted()
        sample_ids = [str(s) for s in sample_ids]
        index = pd.Index(sample_ids)
        if not index.is_unique:
            raise ValueError("events: sample_ids must be unique")
        rows = self._numeric_rows(events, "events")
        sample = index.get_indexer(rows["sample_id"])
        if (sample < 0).any():
            log.info(
                "events: ignored %d rows of %d samples not asked for",
                int((sample < 0).sum()),
                rows["sample_id"][sample < 0].nunique(),
            )
        var = pd.Index(self.variables_).get_indexer(rows["variable"])
        unseen = (var < 0) & (sample >= 0)
        if unseen.any():
            names = sorted(rows["variable"][unseen].unique().tolist())
            log.warning(
                "events: ignored %d rows of %d variables unseen at fit time: %s",
                int(unseen.sum()),
                len(names),
                names[:20],
            )
        keep = (sample >= 0) & (var >= 0)
        sample, var = sample[keep], var[keep]
        values = rows["value"].to_numpy(np.float64)[keep]
        n, t, v = len(sample_ids), self.n_steps, len(self.variables_)
        cell = (sample * t + self._bins(rows["hours"].to_numpy(np.float64)[keep])) * v + var
        clipped = np.clip(values, self.lo_[var], self.hi_[var])
        counts = np.bincount(cell, minlength=n * t * v).reshape(n, t, v)
        sums = np.bincount(cell, weights=clipped, minlength=n * t * v).reshape(n, t, v)
        measured = counts > 0
        z = np.where(measured, (sums / np.maximum(counts, 1) - self.mean_) / self.std_, 0.0)
        # forward fill along time: index of the last measured bin at or before each bin (0 if none;
        # z there is 0 unless bin 0 itself was measured, which is then the right value to carry)
        last = np.where(measured, np.arange(t)[None, :, None], 0)
        np.maximum.accumulate(last, axis=1, out=last)
        filled = np.take_along_axis(z, last, axis=1)
        return np.concatenate([filled, measured], axis=2).astype(np.float32)

    def fit_transform(self, events: pd.DataFrame, sample_ids: Sequence[str]) -> np.ndarray:
        return self.fit(events).transform(events, sample_ids)

    def stats(self) -> dict[str, dict[str, float]]:
        """The fitted per-variable statistics (JSON-ready: floats round-trip exactly)."""
        self._check_fitted()
        return {
            name: {
                "mean": float(self.mean_[i]),
                "std": float(self.std_[i]),
                "clip_low": float(self.lo_[i]),
                "clip_high": float(self.hi_[i]),
            }
            for i, name in enumerate(self.variables_)
        }

    def _bins(self, hours: np.ndarray) -> np.ndarray:
        # the window is closed ([0, window]): an event at exactly window_hours belongs to the last bin
        return np.minimum((hours // self.bin_hours).astype(np.int64), self.n_steps - 1)

    def _numeric_rows(self, events: pd.DataFrame, what: str) -> pd.DataFrame:
        """The usable rows: numeric value, hours inside the window; sorted so that sums (and so the
        file) do not depend on the row order of the input."""
        require_columns(events, EVENT_COLUMNS, what)
        rows = pd.DataFrame(
            {
                "sample_id": events["sample_id"].astype(str).to_numpy(),
                "hours": pd.to_numeric(events["hours"], errors="coerce").to_numpy(
                    np.float64, na_value=np.nan
                ),
                "variable": events["variable"].astype(str).to_numpy(),
                "value": pd.to_numeric(events["value"], errors="coerce").to_numpy(
                    np.float64, na_value=np.nan
                ),
            }
        )
        text_only = ~np.isfinite(rows["value"].to_numpy())
        # a row that cannot be placed (no sample, variable or time) is unusable, not an error
        no_time = (
            rows["hours"].isna()
            | events["sample_id"].isna().to_numpy()
            | events["variable"].isna().to_numpy()
        ).to_numpy()
        outside = ~no_time & ((rows["hours"] < 0) | (rows["hours"] > self.window_hours)).to_numpy()
        if text_only.any():
            log.info(
                "%s: ignored %d rows without a numeric value (text-only results)", what, int(text_only.sum())
            )
        if no_time.any():
            log.warning("%s: ignored %d rows without sample_id, variable or hours", what, int(no_time.sum()))
        if outside.any():
            log.warning(
                "%s: ignored %d rows outside the [0, %g] h window",
                what,
                int(outside.sum()),
                self.window_hours,
            )
        rows = rows[~(text_only | no_time | outside)]
        return rows.sort_values(["sample_id", "variable", "hours", "value"], kind="stable", ignore_index=True)

    def _check_fitted(self) -> None:
        if not hasattr(self, "variables_"):
            raise RuntimeError("EventBinner is not fitted; call fit() on the training events first")


def encode_events(
    events_path: str | Path,
    splits_path: str | Path,
    out_path: str | Path,
    *,
    window_hours: float,
    bin_hours: float,
    variables: Sequence[str] | None = None,
) -> Path:
    """Fit an :class:`EventBinner` on the events of the ``train`` samples of splits.csv, encode every
    sample of splits.csv (in its order) and write the features contract: ``features`` (N·T)×2V with
    ``offsets`` every T rows, so each sample is a T-step sequence."""
    splits = read_splits(splits_path)
    events = pd.read_parquet(events_path)
    require_columns(events, EVENT_COLUMNS, f"events file {events_path}")
    ids = splits["sample_id"].tolist()
    train_ids = set(splits.loc[splits["split"] == "train", "sample_id"])
    if not train_ids:
        raise ValueError(
            f"{splits_path} has no sample in split 'train': nothing to fit the events encoder on"
        )
    event_ids = events["sample_id"].astype(str)
    outside = ~event_ids.isin(set(ids))
    if outside.any():
        log.warning(
            "events: %d rows of %d samples not in %s ignored",
            int(outside.sum()),
            event_ids[outside].nunique(),
            splits_path,
        )
    binner = EventBinner(window_hours, bin_hours, variables).fit(events[event_ids.isin(train_ids).to_numpy()])
    grid = binner.transform(events[~outside.to_numpy()], ids)
    n, t, d = grid.shape
    empty = ~grid[:, :, d // 2 :].any(axis=(1, 2))
    if empty.any():
        log.info(
            "events: %d of %d samples have no usable events (all-zero grid, mask 0): %s",
            int(empty.sum()),
            n,
            [s for s, e in zip(ids, empty, strict=True) if e][:10],
        )
    attrs: dict[str, Any] = {
        "model": Path(out_path).stem,
        "modality": Path(events_path).stem,
        "source": str(events_path),
        "encoder": "events",
        "variables": json.dumps(binner.variables_),
        "channels": json.dumps(binner.channels),
        "stats": json.dumps(binner.stats()),
        "window_hours": binner.window_hours,
        "bin_hours": binner.bin_hours,
        "n_steps": t,
        "fitted_on": "train",
        "n_train": len(train_ids),
        "n_train_with_events": binner.n_train_samples_,
        "n_train_events": binner.n_train_events_,
        "n_without_events": int(empty.sum()),
    }
    write_features(
        out_path, ids, grid.reshape(n * t, d), offsets=np.arange(n + 1, dtype=np.int64) * t, attrs=attrs
    )
    log.info("events: wrote %s: %d samples × %d steps × %d channels", out_path, n, t, d)
    return Path(out_path)
