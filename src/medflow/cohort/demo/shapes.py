"""Vectorised drawing of the structures the demo images are made of (no per-pixel Python loops)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation (tissue texture)."""
    field = gaussian_filter(rng.standard_normal(tuple(shape)), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def wobble_coefficients(rng: np.random.Generator, amplitude: float, harmonics: int = 5) -> np.ndarray:
    """Random (amplitude, phase) pairs for an irregular outline: row k is harmonic k + 2."""
    amps = amplitude * rng.uniform(0.3, 1.0, harmonics) / np.arange(1, harmonics + 1) ** 0.5
    phases = rng.uniform(0, 2 * np.pi, harmonics)
    return np.stack([amps, phases], axis=1)


def _radial_factor(theta: np.ndarray, wobble: np.ndarray | None) -> np.ndarray:
    if wobble is None or len(wobble) == 0:
        return np.ones_like(theta)
    k = np.arange(2, 2 + len(wobble))
    return 1.0 + np.sum(wobble[:, 0] * np.cos(k * theta[..., None] + wobble[:, 1]), axis=-1)


def ellipse_distance(
    shape: Sequence[int],
    center: Sequence[float],
    radii: Sequence[float],
    angle: float = 0.0,
    wobble: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised distance to an (optionally irregular) ellipse's centre: < 1 inside, 1 on the edge."""
    yy, xx = np.indices(tuple(shape), dtype=float)
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / radii[1]
    v = (-s * dx + c * dy) / radii[0]
    rho = np.hypot(u, v)
    return rho / _radial_factor(np.arctan2(v, u), wobble)


def ellipse(
    shape: Sequence[int],
    center: Sequence[float],
    radii: Sequence[float],
    angle: float = 0.0,
    wobble: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of an (optionally irregular) filled ellipse; radii are (row, column) half-axes."""
    return ellipse_distance(shape, center, radii, angle, wobble) < 1.0


def soft_ellipse(
    shape: Sequence[int],
    center: Sequence[float],
    radii: Sequence[float],
    angle: float = 0.0,
    wobble: np.ndarray | None = None,
    edge: float = 0.15,
) -> np.ndarray:
    """Ellipse with a smooth edge (weights in [0, 1]), so drawn structures are not pixel-aliased."""
    dist = ellipse_distance(shape, center, radii, angle, wobble)
    return np.clip((1.0 + edge - dist) / (2 * edge), 0.0, 1.0)


def ellipsoid_distance(
    shape: Sequence[int],
    center: Sequence[float],
    radii: Sequence[float],
    wobble: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised distance to an axis-aligned ellipsoid's centre (D×H×W), with an irregular surface."""
    zz, yy, xx = np.indices(tuple(shape), dtype=float)
    dz, dy, dx = (zz - center[0]) / radii[0], (yy - center[1]) / radii[1], (xx - center[2]) / radii[2]
    rho = np.sqrt(dz**2 + dy**2 + dx**2)
    # Irregularity depends on the azimuth and, a little, the elevation, so the blob is not a prism.
    theta = np.arctan2(dy, dx) + 0.7 * np.arctan2(dz, np.hypot(dx, dy) + 1e-9)
    return rho / _radial_factor(theta, wobble)


def spikes(
    shape: Sequence[int],
    center: Sequence[float],
    radius: float,
    count: int,
    length: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Thin radial strands from a nodule's edge (spiculation), weights in [0, 1]."""
    yy, xx = np.indices(tuple(shape), dtype=float)
    dy, dx = yy - center[0], xx - center[1]
    r = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    out = np.zeros(tuple(shape))
    for angle in rng.uniform(0, 2 * np.pi, count):
        # angular distance turned into distance across the strand (pixels)
        across = np.abs(np.angle(np.exp(1j * (theta - angle)))) * r
        along = (r > radius * 0.8) & (r < radius + length)
        out = np.maximum(out, np.where(along, np.clip(1.2 - across, 0, 1), 0.0))
    return out
