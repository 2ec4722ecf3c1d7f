"""Load a local state_dict (torchvision-, MONAI- or medflow-style) into a :class:`Classifier`.

Weights are never downloaded: the machines that run the workflow have no internet, and a pinned
local file is what makes a run reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .classifier import Classifier

log = logging.getLogger(__name__)

# First key component of the original classification layer in torchvision / MONAI / Cadene models.
CLASSIFIER_PREFIXES = ("fc", "classifier", "last_linear")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot load {path} as a state_dict (torch.load, weights_only=True): {e}") from e
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{path} is not a state_dict: entries {bad[:5]} are not tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def _head_linear_prefix(model: Classifier) -> str:
    linears = [name for name, m in model.head.named_modules() if isinstance(m, nn.Linear)]
    return f"head.{linears[-1]}."


def _stem_key(target: Mapping[str, Tensor]) -> str | None:
    """The first convolution weight: the only layer whose input channels follow the data."""
    return next((k for k, v in target.items() if k.endswith("weight") and v.ndim >= 4), None)


def _is_classifier(key: str) -> bool:
    return key.removeprefix("encoder.").split(".", 1)[0] in CLASSIFIER_PREFIXES


def _destination(key: str, target: Mapping[str, Tensor], head_prefix: str) -> str | None:
    """Model key for checkpoint ``key``: as is, under ``encoder.``, or the head for a classifier layer."""
    for candidate in (key, f"encoder.{key}"):
        if candidate in target:
            return candidate
    if _is_classifier(key):
        candidate = head_prefix + key.rsplit(".", 1)[-1]
        if candidate in target:
            return candidate
    return None


def _summed_stem(value: Tensor, want: torch.Size) -> Tensor | None:
    """RGB stem → 1-channel stem by summing over input channels (a grey image x equals RGB (x, x, x))."""
    if value.ndim == len(want) and value.shape[1] == 3 and want[1] == 1:
        summed = value.sum(dim=1, keepdim=True)
        if summed.shape == want:
            return summed
    return None


def load_weights(model: Classifier, path: str | Path) -> list[str]:
    """Load the local state_dict at ``path`` into ``model``; return the model keys left as they were.

    Accepts a raw state_dict or a dict holding it under ``"model"`` or ``"state_dict"``. Keys may be
    torchvision-style (``conv1.weight``, ``fc.weight``), MONAI-style (``layer0...``, ``last_linear...``) or
    medflow-style (``encoder...``, ``head...``). A classifier layer (``fc``, ``classifier``,
    ``last_linear``) goes to the head when its shape fits and is dropped otherwise; a 3-channel stem
    is summed into a 1-channel one. Any other shape mismatch is an error, not a silent skip.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} not found: medflow never downloads weights, give a local state_dict file"
        )
    source = _read_state_dict(path)
    target = model.state_dict()
    head_prefix = _head_linear_prefix(model)
    stem = _stem_key(target)

    loaded: dict[str, Tensor] = {}
    dropped: list[str] = []
    unused: list[str] = []
    for key, value in source.items():
        dest = _destination(key, target, head_prefix)
        if dest is None:
            unused.append(key)
            continue
        want = target[dest].shape
        if value.shape == want:
            loaded[dest] = value
        elif dest == stem and (summed := _summed_stem(value, want)) is not None:
            loaded[dest] = summed
        elif _is_classifier(key):
            dropped.append(key)
        else:
            raise ValueError(
                f"{path}: {key!r} has shape {tuple(value.shape)} but the model's {dest!r} has shape {tuple(want)}"
            )
    if not loaded:
        raise ValueError(f"no entry of {path} matches a parameter of this model")

    model.load_state_dict(loaded, strict=False)
    not_loaded = [k for k in target if k not in loaded]
    if dropped:
        log.warning("%s: classifier weights of another shape dropped: %s", path, ", ".join(dropped))
    if unused:
        log.warning(
            "%s: %d entries with no counterpart in the model ignored: %s",
            path,
            len(unused),
            ", ".join(unused[:20]),
        )
    if not_loaded:
        log.warning(
            "%s: %d model keys not loaded (left as initialised): %s",
            path,
            len(not_loaded),
            ", ".join(not_loaded),
        )
    return not_loaded
