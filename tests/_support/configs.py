"""The tiny models of the suite: one set of sizes, shared by the core, backend and reliability tests.

Hidden 16, 2 layers, values 24, shared (z) 8, EMA 4, NFFN 20, vocabulary 50; an initializer
range of 0.1 (not 0.02) so that gates and attention weights are far from uniform and a wrong
mask or cache changes outputs well above the tolerances. The keys are field names of both
``MegaCoreConfig`` and the HF ``MegaConfig``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Final, Mapping

from mega_plugin.core.config import MegaCoreConfig

TINY: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "vocab_size": 50,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "intermediate_size": 24,
        "shared_representation_size": 8,
        "ema_projection_size": 4,
        "nffn_hidden_size": 20,
        "max_positions": 32,
        "initializer_range": 0.1,
        "pad_token_id": 1,
    }
)
"""Sizes of every tiny model (HF ``MegaConfig`` or ``MegaCoreConfig`` keyword arguments)."""

NO_DROPOUT: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "dropout_prob": 0.0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "nffn_activation_dropout_prob": 0.0,
    }
)
"""Every dropout of a MEGA layer off (training then runs the same arithmetic as eval)."""

CAUSAL: Final[Mapping[str, Any]] = MappingProxyType({"is_decoder": True, "bidirectional": False})
"""A decoder: causal attention and a causal EMA (what streaming needs)."""

CORE_MAX_POSITIONS: Final = 64
"""Core models take up to 64 positions unless a test asks for more."""


def tiny_config(**overrides: Any) -> MegaCoreConfig:
    """A :data:`TINY` core config without dropout (64 positions); ``overrides`` replace any field."""
    return MegaCoreConfig(**{**TINY, **NO_DROPOUT, "max_positions": CORE_MAX_POSITIONS, **overrides})
