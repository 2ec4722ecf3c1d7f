"""Intensity normalisation of one sample, applied by the datasets before any augmentation.

Normalising per sample (not with cohort statistics) keeps a model independent of which samples
were in the training split, and a fixed window keeps CT in Hounsfield units comparable across
scanners. Masks never come through here: they stay 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("auto", "window", "zscore", "minmax")
_STD_FLOOR = 1e-6


@dataclass
class Intensity:
    """How to normalise: ``window`` clips to [lo, hi] and scales to [0, 1]; ``zscore`` and
    ``minmax`` work per sample and per channel; ``auto`` is ``window`` when a window is known
    (this object's, else the file's ``window`` attr) and ``zscore`` otherwise."""

    mode: str = "auto"
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"intensity mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.window is not None:
            self.window = _check_window(self.window)

    @classmethod
    def from_config(cls, cfg: dict | str | None, file_window: tuple[float, float] | None = None) -> Intensity:
        """From a study config value: ``None``, a mode name, or ``{mode, window}``. A window in the
        config wins over the ingest file's ``window`` attr (``file_window``)."""
        if cfg is None:
            cfg = {}
        elif isinstance(cfg, str):
            cfg = {"mode": cfg}
        unknown = sorted(set(cfg) - {"mode", "window"})
        if unknown:
            raise ValueError(f"unknown intensity key(s) {', '.join(unknown)} (allowed: mode, window)")
        window = cfg.get("window")
        if window is None and file_window is not None:
            window = tuple(file_window)
        return cls(mode=cfg.get("mode", "auto"), window=window)

    def resolved(self, window: tuple[float, float] | None = None) -> str:
        """The mode actually applied when the file's window attr is ``window``."""
        if self.mode != "auto":
            return self.mode
        return "window" if (self.window or window) is not None else "zscore"

    def __call__(
        self, x: np.ndarray, units: str = "raw", window: tuple[float, float] | None = None
    ) -> np.ndarray:
        """Normalise ``x`` (channels first: C×H×W or C×D×H×W) of a file with ``units`` and
        ``window`` attrs; returns float32."""
        x = np.asarray(x, dtype=np.float32)
        mode = self.resolved(window)
        if mode == "window":
            lo_hi = self.window or (_check_window(window) if window is not None else None)
            if lo_hi is None:
                raise ValueError("intensity mode 'window' needs a window: set intensity.window or the modality's window")
            if units == "mixed":
                raise ValueError("a fixed intensity window needs one unit for all samples; the file's units are 'mixed'")
            lo, hi = lo_hi
            return (np.clip(x, lo, hi) - np.float32(lo)) / np.float32(hi - lo)
        axes = tuple(range(1, x.ndim))
        if mode == "zscore":
            mean = x.mean(axis=axes, keepdims=True)
            std = np.maximum(x.std(axis=axes, keepdims=True), _STD_FLOOR)
            return ((x - mean) / std).astype(np.float32, copy=False)
        low = x.min(axis=axes, keepdims=True)
        span = np.maximum(x.max(axis=axes, keepdims=True) - low, _STD_FLOOR)
        return ((x - low) / span).astype(np.float32, copy=False)


def _check_window(window: tuple[float, float] | list[float] | np.ndarray) -> tuple[float, float]:
    values = [float(v) for v in np.asarray(window, dtype=np.float64).ravel()]
    if len(values) != 2 or not values[0] < values[1]:
        raise ValueError(f"an intensity window is [lo, hi] with lo < hi, not {list(values)}")
    return values[0], values[1]
