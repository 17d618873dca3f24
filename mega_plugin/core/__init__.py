"""The backend-neutral MEGA core (imports torch only).

Config (:class:`MegaCoreConfig`), modules (EMA, gated attention, NFFN, block, stack,
backbone), streaming state, and the kernel ops with their reference implementations
(:mod:`.ops`). Each sub-layer is written once, as the paper writes it; fast schedules live
in ``mega_plugin.backends``.
"""

from __future__ import annotations

from .backbone import MegaBackbone, run_backbone
from .block import BlockResult, MegaBlock
from .config import (
    ACTIVATIONS,
    ATTENTION_ACTIVATIONS,
    NORMALIZATION_TYPES,
    RELATIVE_POSITIONAL_BIASES,
    MegaCoreConfig,
    validate_config,
)
from .cross_attention import EncoderMemory, GatedCrossAttention
from .ema import MultiDimensionDampedEma
from .embeddings import MegaEmbeddings
from .ffn import NormalizedFeedForward
from .gated_attention import MovingAverageGatedAttention
from .init import initialize_module, initialize_tree
from .norms import RMSNorm, ScaleNorm, SequenceNorm
from .positional import RotaryRelativePositionalBias, SimpleRelativePositionalBias
from .masks import encoder_key_mask, padding_to_key_mask
from .stack import MegaLayerStack, StackOutput
from .state import LayerState, MegaState

__all__ = [
    "ACTIVATIONS",
    "ATTENTION_ACTIVATIONS",
    "NORMALIZATION_TYPES",
    "RELATIVE_POSITIONAL_BIASES",
    "BlockResult",
    "EncoderMemory",
    "GatedCrossAttention",
    "LayerState",
    "MegaBackbone",
    "MegaBlock",
    "MegaCoreConfig",
    "MegaEmbeddings",
    "MegaLayerStack",
    "MegaState",
    "MovingAverageGatedAttention",
    "MultiDimensionDampedEma",
    "NormalizedFeedForward",
    "RMSNorm",
    "RotaryRelativePositionalBias",
    "ScaleNorm",
    "SequenceNorm",
    "SimpleRelativePositionalBias",
    "StackOutput",
    "encoder_key_mask",
    "initialize_module",
    "initialize_tree",
    "padding_to_key_mask",
    "run_backbone",
    "validate_config",
]
