"""Stage-1 networks: every model is a :class:`Classifier` (encoder → feature vector → linear head)."""

from .classifier import Classifier
from .contrastive import ProjectionHead, nt_xent_loss, supcon_loss
from .weights import load_weights
from .zoo import MODEL_NAMES, build_model

__all__ = [
    "MODEL_NAMES",
    "Classifier",
    "ProjectionHead",
    "build_model",
    "load_weights",
    "nt_xent_loss",
    "supcon_loss",
]
