"""What every layer reads off a study's config: the kinds of modality and the study's main label.

It imports nothing of medflow, so the config checks (:mod:`medflow.config`) and the stage-2 head
specs they validate (:mod:`medflow.heads.specs`) can both use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IMAGE_KINDS = ("image", "patches", "volume", "slices")
TABLE_KINDS = ("table", "events", "notes")


def stratify_label(study: Mapping[str, Any]) -> str:
    """The label the split stratifies on, and the default task of models that name none."""
    return study["split"].get("stratify") or study["labels"][0]
