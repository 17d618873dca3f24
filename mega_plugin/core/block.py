"""One MEGA block: gated attention, the optional gated cross-attention, then the optional NFFN."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Final

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import MegaCoreConfig
from .cross_attention import EncoderMemory, GatedCrossAttention
from .ffn import NormalizedFeedForward
from .gated_attention import MovingAverageGatedAttention
from .state import LayerState


@dataclass
class BlockResult:
    """Output of one block call."""

    hidden: Tensor
    """(B, L, D) block output."""

    weights: Tensor | None
    """(B, C, Lq, Lk) self-attention weights before dropout, when asked for."""

    cross_weights: Tensor | None
    """(B, L, S) cross-attention weights before dropout, when asked for (cross-attention only)."""

    state: LayerState | None
    """The updated streaming state (cached encoder keys/values included), when asked for."""


NO_CROSS_ATTENTION: Final = (
    "encoder_hidden_states/encoder_attention_mask need cross-attention, which this model does not "
    "have: build it with add_cross_attention=True (and is_decoder=True, bidirectional=False)"
)
ENCODER_STATES_NEEDED: Final = (
    "this model has cross-attention (add_cross_attention=True): pass encoder_hidden_states "
    "(batch, source_length, hidden_size), or a cache that already holds them"
)


# FSDP2 (``fully_shard``, used by fairseq2 and accelerate) finds a unit's output tensors with
# ``tree_flatten`` to re-gather the unit's parameters before its backward. An unregistered
# dataclass is an opaque leaf, and a block's backward would then run on freed (resharded) weights
# ("setStorage ... out of bounds for storage of size 0"). The state stays an opaque leaf.
if BlockResult not in pytree.SUPPORTED_NODES:
    pytree.register_dataclass(BlockResult, field_names=[field.name for field in dataclasses.fields(BlockResult)])


class MegaBlock(nn.Module):
    """``mega_layer``, then ``cross_attn`` (when ``add_cross_attention``), then ``nffn``."""

    # Activation checkpointing, block by block: in training with gradients, the block's activations
    # are recomputed in the backward instead of kept. The two names are the ones transformers'
    # gradient_checkpointing_enable sets on every module that has them (its kwargs, e.g.
    # use_reentrant, arrive inside the function), so the HF adapter adds nothing.
    gradient_checkpointing: bool = False
    _gradient_checkpointing_func: Callable[..., Any] = partial(checkpoint, use_reentrant=False)

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        if config.add_cross_attention and not config.is_decoder:
            raise ValueError(
                "add_cross_attention=True needs a decoder: set is_decoder=True and bidirectional=False "
                "(the reference builds cross-attention only into decoders)"
            )
        self.mega_layer = MovingAverageGatedAttention(config)
        self.cross_attn = GatedCrossAttention(config) if config.add_cross_attention else None
        self.nffn = NormalizedFeedForward(config) if config.use_normalized_ffn else None

    def forward(
        self,
        hidden: Tensor,
        *,
        key_mask: Tensor | None = None,
        causal: bool = False,
        state: LayerState | None = None,
        update_state: bool = False,
        need_weights: bool = False,
        encoder_hidden: Tensor | None = None,
        encoder_mask: Tensor | None = None,
        position: int = 0,
    ) -> BlockResult:
        """``hidden`` (B, L, D) at absolute positions ``position ..``; ``encoder_hidden`` (B, S, D)
        with ``encoder_mask`` (B, S) bool (True = real token) feeds the cross-attention."""
        options = dict(key_mask=key_mask, causal=causal, state=state, need_weights=need_weights,
                       encoder_mask=encoder_mask, position=position)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled() and not update_state:
            # The function sees tensors only (a reentrant checkpoint tracks tensor inputs and
            # outputs): the inputs that may need gradients positionally, the rest bound.
            hidden, weights, cross_weights = self._gradient_checkpointing_func(
                partial(self._run_as_tensors, **options), hidden, encoder_hidden
            )
            return BlockResult(hidden=hidden, weights=weights, cross_weights=cross_weights, state=None)
        return self._run(hidden, update_state=update_state, encoder_hidden=encoder_hidden, **options)

    def _run_as_tensors(
        self, hidden: Tensor, encoder_hidden: Tensor | None, **options: Any
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        result = self._run(hidden, update_state=False, encoder_hidden=encoder_hidden, **options)
        return result.hidden, result.weights, result.cross_weights

    def _run(
        self,
        hidden: Tensor,
        *,
        key_mask: Tensor | None,
        causal: bool,
        state: LayerState | None,
        update_state: bool,
        need_weights: bool,
        encoder_hidden: Tensor | None,
        encoder_mask: Tensor | None,
        position: int,
    ) -> BlockResult:
        result = self.mega_layer(
            hidden,
            key_mask=key_mask,
            causal=causal,
            state=state,
            update_state=update_state,
            need_weights=need_weights,
        )
        hidden, new_state = result.hidden, result.state
        cross_weights = None
        if self.cross_attn is not None:
            memory = self._memory(encoder_hidden, encoder_mask, state)
            hidden, cross_weights = self.cross_attn(
                hidden, memory, query_offset=position, need_weights=need_weights
            )
            if new_state is not None:
                new_state.cross_keys = memory.keys
                new_state.cross_values = memory.values
                new_state.cross_key_mask = memory.key_mask
        elif encoder_hidden is not None or encoder_mask is not None:
            raise ValueError(NO_CROSS_ATTENTION)
        if self.nffn is not None:
            hidden = self.nffn(hidden)
        return BlockResult(hidden=hidden, weights=result.weights, cross_weights=cross_weights, state=new_state)

    def _memory(
        self, encoder_hidden: Tensor | None, encoder_mask: Tensor | None, state: LayerState | None
    ) -> EncoderMemory:
        """Cached encoder keys/values (and mask) when the state has them, else a fresh projection.

        The stack checks, once per call, that encoder inputs passed along with a cached state
        match it (length and mask).
        """
        assert self.cross_attn is not None
        if state is not None and state.has_cross:
            assert state.cross_keys is not None and state.cross_values is not None
            return EncoderMemory(keys=state.cross_keys, values=state.cross_values, key_mask=state.cross_key_mask)
        if encoder_hidden is None:
            raise ValueError(ENCODER_STATES_NEEDED)
        return self.cross_attn.project_memory(encoder_hidden, encoder_mask)
