"""Torch datasets, augmentations, samplers and loaders over the ingest HDF5 files."""

from medflow.data.augment import TwoViews, build_augment, two_views
from medflow.data.h5 import H5Samples, H5Slices
from medflow.data.intensity import Intensity
from medflow.data.loader import make_loader, seed_worker, set_epoch
from medflow.data.samplers import BalancedSampler, ShardSampler

__all__ = [
    "BalancedSampler",
    "H5Samples",
    "H5Slices",
    "Intensity",
    "ShardSampler",
    "TwoViews",
    "build_augment",
    "make_loader",
    "seed_worker",
    "set_epoch",
    "two_views",
]
