"""Augmentations of one sample tensor (C×H×W or C×D×H×W), built from a study's ``augment:`` config.

Every random draw comes from torch's global RNG: the DataLoader seeds it per worker from the
loader's generator, which :func:`medflow.data.loader.set_epoch` derives from (seed, epoch), so an
epoch's augmentations are the same whether or not training was resumed before it. The ops are
applied in a fixed order (geometric, then intensity), whatever the order of the config's keys. A
mask channel moves with the image (nearest-neighbour, so it stays 0/1) and is never jittered.
Every object here is a plain class, so it pickles into spawned DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

KEYS = {
    2: ("hflip", "vflip", "rotate", "crop", "intensity", "blur", "noise"),
    3: ("flip", "rotate", "scale", "intensity", "noise"),
}
_PROBABILITIES = ("hflip", "vflip", "flip", "blur")

Pair = tuple[torch.Tensor, torch.Tensor | None]


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


class Flip:
    """Flip each of ``dims`` independently with probability ``prob``."""

    def __init__(self, prob: float, dims: tuple[int, ...]) -> None:
        self.prob, self.dims = prob, dims

    def __call__(self, img: torch.Tensor, mask: torch.Tensor | None) -> Pair:
        dims = [d for d in self.dims if float(torch.rand(())) < self.prob]
        if not dims:
            return img, mask
        return img.flip(dims), (mask.flip(dims) if mask is not None else None)


class Rotate2D:
    """Rotation by U(−degrees, degrees) about the image centre; corners filled with 0."""

    def __init__(self, degrees: float) -> None:
        self.degrees = degrees

    def __call__(self, img: torch.Tensor, mask: torch.Tensor | None) -> Pair:
        angle = _uniform(-self.degrees, self.degrees)
        img = TF.rotate(img, angle, interpolation=InterpolationMode.BILINEAR)
        return img, (TF.rotate(mask, angle, interpolation=InterpolationMode.NEAREST) if mask is not None else None)


class ResizedCrop:
    """RandomResizedCrop: a crop of U(scale, 1) of the area, aspect ratio in [3/4, 4/3], resized back
    to the input size."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, img: torch.Tensor, mask: torch.Tensor | None) -> Pair:
        h, w = img.shape[-2:]
        area = h * w * _uniform(self.scale, 1.0)
        ratio = math.exp(_uniform(math.log(3 / 4), math.log(4 / 3)))
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        img = TF.resized_crop(img, top, left, ch, cw, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
        if mask is not None:
            mask = TF.resized_crop(mask, top, left, ch, cw, [h, w], interpolation=InterpolationMode.NEAREST)
        return img, mask


class Affine3D:
    """Rotation by U(−d, d) degrees about the depth, height and width axes (``degrees``), and an
    isotropic zoom of U(1 − scale, 1 + scale); one resampling, trilinear (nearest for the mask)."""

    def __init__(self, degrees: tuple[float, float, float], scale: float) -> None:
        self.degrees, self.scale = degrees, scale

    def __call__(self, img: torch.Tensor, mask: torch.Tensor | None) -> Pair:
        about_d, about_h, about_w = (math.radians(_uniform(-d, d)) for d in self.degrees)
        zoom = _uniform(1 - self.scale, 1 + self.scale)
        # affine_grid works in (x, y, z) = (W, H, D) coordinates normalised to [−1, 1] per axis;
        # rotating in voxel units keeps a non-cubic volume from being sheared.
        rotation = _rot(about_d, 0, 1) @ _rot(about_h, 2, 0) @ _rot(about_w, 1, 2)
        d, h, w = img.shape[-3:]
        size = torch.tensor([w, h, d], dtype=torch.float64)
        linear = torch.diag(1 / size) @ rotation @ torch.diag(size) / zoom
        theta = torch.cat([linear, torch.zeros(3, 1, dtype=torch.float64)], dim=1)[None].to(img.dtype)
        grid = F.affine_grid(theta, [1, 1, d, h, w], align_corners=False)
        img = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        if mask is not None:
            mask = F.grid_sample(mask[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
        return img, mask


def _rot(angle: float, a: int, b: int) -> torch.Tensor:
    """Rotation by ``angle`` in the plane of coordinate axes ``a`` → ``b``."""
    m = torch.eye(3, dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


class Jitter:
    """Contrast and brightness: x·(1 + U(−s, s)) + U(−s, s)·std(x)."""

    def __init__(self, strength: float) -> None:
        self.strength = strength

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        contrast = 1 + _uniform(-self.strength, self.strength)
        brightness = _uniform(-self.strength, self.strength) * float(img.std())
        return img * contrast + brightness


class Blur:
    """With probability ``prob`` a Gaussian blur of sigma U(0.1, 1.0)."""

    def __init__(self, prob: float) -> None:
        self.prob = prob

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.prob:
            return img
        sigma = _uniform(0.1, 1.0)
        k = 2 * math.ceil(3 * sigma) + 1
        return TF.gaussian_blur(img, [k, k], [sigma, sigma])


class Noise:
    """Additive Gaussian noise of standard deviation ``std`` (normalised units)."""

    def __init__(self, std: float) -> None:
        self.std = std

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return img + torch.randn_like(img) * self.std


class Augment:
    """Geometric ops on image and mask alike, then intensity ops on the image channels only."""

    def __init__(self, geometric: list, photometric: list, mask_channel: int | None) -> None:
        self.geometric, self.photometric, self.mask_channel = geometric, photometric, mask_channel

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.mask_channel
        if c is None:
            img, mask = x, None
        else:
            img, mask = torch.cat([x[:c], x[c + 1 :]]), x[c : c + 1]
        for op in self.geometric:
            img, mask = op(img, mask)
        for op in self.photometric:
            img = op(img)
        return img if mask is None else torch.cat([img[:c], mask, img[c:]])


def build_augment(cfg: dict[str, Any] | None, ndim: int, mask_channel: int | None = None) -> Callable | None:
    """The augmentation of a config dict (see ``KEYS``), or None when it asks for nothing.

    ``ndim`` is 2 (images, slices) or 3 (volumes); ``mask_channel`` is the channel that holds a
    0/1 mask. 3D ``rotate`` is a number (about the depth axis only, for anisotropic CT) or three
    numbers (about depth, height and width).
    """
    if ndim not in KEYS:
        raise ValueError(f"augmentations exist for 2D and 3D samples, not ndim={ndim}")
    cfg = dict(cfg or {})
    allowed = KEYS[ndim]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {ndim}D augmentation key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    if mask_channel is not None and mask_channel < 0:
        raise ValueError(f"mask_channel must be a channel index >= 0, not {mask_channel}")
    value = {k: _number(k, v) for k, v in cfg.items() if not (ndim == 3 and k == "rotate")}
    geometric: list = []
    if ndim == 2:
        if value.get("hflip"):
            geometric.append(Flip(value["hflip"], (-1,)))
        if value.get("vflip"):
            geometric.append(Flip(value["vflip"], (-2,)))
        if value.get("rotate"):
            geometric.append(Rotate2D(value["rotate"]))
        if value.get("crop"):
            if not value["crop"] <= 1:
                raise ValueError(f"augment crop is the smallest area fraction kept, in (0, 1], not {value['crop']}")
            geometric.append(ResizedCrop(value["crop"]))
    else:
        if value.get("flip"):
            geometric.append(Flip(value["flip"], (-3, -2, -1)))
        degrees = _degrees3d(cfg.get("rotate") or 0)
        if value.get("scale", 0) >= 1:
            raise ValueError(f"augment scale is a fraction below 1, not {value['scale']}")
        if any(degrees) or value.get("scale"):
            geometric.append(Affine3D(degrees, value.get("scale", 0.0)))
    photometric: list = []
    if value.get("intensity"):
        photometric.append(Jitter(value["intensity"]))
    if value.get("blur"):
        photometric.append(Blur(value["blur"]))
    if value.get("noise"):
        photometric.append(Noise(value["noise"]))
    if not geometric and not photometric:
        return None
    return Augment(geometric, photometric, mask_channel)


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
        raise ValueError(f"augment {key} must be a number >= 0, not {v!r}")
    if key in _PROBABILITIES and v > 1:
        raise ValueError(f"augment {key} is a probability in [0, 1], not {v!r}")
    return float(v)


def _degrees3d(v: Any) -> tuple[float, float, float]:
    if isinstance(v, Sequence) and not isinstance(v, str):
        if len(v) != 3:
            raise ValueError(f"3D augment rotate is one number or three (depth, height, width), not {list(v)}")
        d, h, w = (_number("rotate", a) for a in v)
        return d, h, w
    return _number("rotate", v), 0.0, 0.0


class TwoViewTransform:
    """Two independent augmentations of one sample: the positive pair of SimCLR."""

    def __init__(self, augment: Callable) -> None:
        self.augment = augment

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(x), self.augment(x)


def two_views(augment: Callable) -> TwoViewTransform:
    """A callable returning two independent augmentations of the same sample."""
    return TwoViewTransform(augment)


class TwoViews(Dataset):
    """Items ``{x1, x2, y, index, ...}`` of two augmented views of ``base_dataset``'s ``x``.

    The base dataset must not augment itself (both views would share its draw), and ``augment``
    must exist: two identical views make the contrastive task trivial.
    """

    def __init__(self, base_dataset: Dataset, augment: Callable | None) -> None:
        if getattr(base_dataset, "augment", None) is not None:
            raise ValueError("TwoViews needs a base dataset built with augment=None")
        if augment is None:
            raise ValueError("contrastive views need augmentations: the study's augment config is empty")
        self.base = base_dataset
        self.views = two_views(augment)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        x1, x2 = self.views(item.pop("x"))
        return {"x1": x1, "x2": x2, **item}
