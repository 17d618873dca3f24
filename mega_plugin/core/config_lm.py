"""The original language models' input and output options: the final norm.

:class:`LanguageModelOptions` is a base of :class:`~.config.MegaCoreConfig` (its fields are core
fields like any other). Every default switches the option off, so a config without these keys
builds the Hugging Face layout unchanged: no norm after the last layer. The original LRA
pre-norm encoders (Image, Pathfinder, Path-X) have the same final norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LanguageModelOptions:
    """Options of the original facebookresearch/mega language models (WikiText-103, enwik8)."""

    add_final_norm: bool = False
    """Normalise the last layer's output (type ``normalization_type``), as the original pre-norm
    stacks (``--normalize-before``) do. ``False`` is the HF layout."""

    final_norm_affine: bool = True
    """Learn the final norm's affine parameters (``False``: the original's ``--no-affine-final-norm``)."""


def validate_language_model_options(config: Any) -> None:
    """Raise ``ValueError`` naming the field and the allowed values for a bad option."""
    for name in ("add_final_norm", "final_norm_affine"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be true or false, got {getattr(config, name)!r}")
