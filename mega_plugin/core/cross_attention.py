"""Gated cross-attention: the ``cross_attn`` sub-layer of a MEGA decoder block.

It sits between the gated self-attention (``mega_layer``) and the NFFN. For decoder input
x (B, L, D) and encoder output e (B, S, D)::

    x' = norm(x) if normalize_before_mega else x
    u, r, q = split(q_proj(x'), [D, D, Z])         # update gate, reset gate, query
    u = sigmoid(u); r = silu(r)
    k = k_proj(e)                                  # (B, S, Z)
    v = act(v_proj(e))                             # (B, S, D)
    w = attention(q, k, bias)                      # (B, L, S), no causal mask
    h = act(h_proj((w @ v) * r))
    out = x + u * (h - x);  out = norm(out) unless normalize_before_mega

Attention uses the same functions as self-attention (softmax with ``Z ** -0.5``; laplace or
relu2 with ``q.k`` divided by the number of real encoder tokens), padded encoder tokens
masked out, and the relative bias between the *absolute* decoder position of each query and
the encoder position of each key: bias[i, j] = rel(j - (offset + i)). The encoder keys and
values do not depend on the decoder, so incremental decoding projects them once
(:meth:`GatedCrossAttention.project_memory`) and keeps them in the layer state.

Submodule names match HF checkpoints: ``norm``, ``k_proj``, ``v_proj``, ``q_proj``,
``h_proj``, ``rel_pos_bias``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MegaCoreConfig
from .gated_sublayer import GatedSublayer
from .positional import SimpleRelativePositionalBias, relative_positional_bias


@dataclass
class EncoderMemory:
    """What the cross-attention reads from the encoder, projected once per encoder pass."""

    keys: Tensor
    """(B, S, Z) ``k_proj(encoder_hidden)``."""

    values: Tensor
    """(B, S, D) ``act(v_proj(encoder_hidden))``."""

    key_mask: Tensor | None
    """(B, S) bool, True for real encoder tokens; None when all are real."""


class GatedCrossAttention(GatedSublayer):
    """Single-head attention from decoder queries to encoder keys, gated like ``mega_layer``."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__(config)
        self.k_proj = nn.Linear(config.hidden_size, config.shared_representation_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        # One projection yields the update gate (D), the reset gate (D) and the query (Z).
        self.q_proj = nn.Linear(config.hidden_size, 2 * config.hidden_size + config.shared_representation_size)
        self.h_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.rel_pos_bias = relative_positional_bias(config, positions=config.cross_attention_max_positions)

    def project_memory(self, encoder_hidden: Tensor, key_mask: Tensor | None = None) -> EncoderMemory:
        """Encoder output (B, S, D) and its (B, S) bool mask -> keys and values for every later call."""
        if encoder_hidden.dim() != 3 or encoder_hidden.shape[-1] != self.hidden_size:
            raise ValueError(
                f"encoder_hidden_states must have shape (batch, source_length, hidden_size={self.hidden_size}), "
                f"got {tuple(encoder_hidden.shape)}"
            )
        keys = self.k_proj(encoder_hidden)
        values = self.activation(self.v_proj(encoder_hidden))
        return EncoderMemory(keys=keys, values=values, key_mask=key_mask)

    def forward(
        self, x: Tensor, memory: EncoderMemory, *, query_offset: int = 0, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` (B, L, D) decoder states at absolute positions ``query_offset ..``.

        Returns the updated states (B, L, D) and, when asked for, the attention weights
        (B, L, S) before dropout.
        """
        batch, length, _ = x.shape
        if memory.keys.shape[0] != batch:
            raise ValueError(
                f"encoder_hidden_states have batch size {memory.keys.shape[0]}, the decoder input {batch}"
            )
        source_length = memory.keys.shape[1]
        residual = x
        normed = self.norm(x) if self.prenorm else x
        update_gate, reset_gate, query = torch.split(
            self.q_proj(normed), [self.hidden_size, self.hidden_size, self.shared_size], dim=-1
        )
        update_gate = torch.sigmoid(update_gate)
        reset_gate = F.silu(reset_gate)
        values = self.hidden_dropout(memory.values)
        bias = self._bias(length, source_length, query_offset)
        attended, weights = self.attend_frames(
            query.unsqueeze(1),  # (B, 1, L, Z): one frame spanning the whole decoder input
            memory.keys.unsqueeze(1),
            values.unsqueeze(1),
            bias,
            None if memory.key_mask is None else memory.key_mask.unsqueeze(1),
            0,
            causal=False,
            need_weights=need_weights,
        )
        out = self.gated_residual(residual, update_gate, self.activation(self.h_proj(attended.squeeze(1) * reset_gate)))
        return out, (weights.squeeze(1) if weights is not None else None)

    def _bias(self, query_length: int, key_length: int, query_offset: int) -> Tensor:
        """(L, S) relative bias between absolute decoder positions and encoder positions."""
        if isinstance(self.rel_pos_bias, SimpleRelativePositionalBias):
            limit = self.rel_pos_bias.center
            longest = max(query_offset + query_length, key_length)
            if longest > limit:
                raise ValueError(
                    f"cross-attention with relative_positional_bias='simple' covers decoder positions and "
                    f"encoder lengths up to {limit} (cross_attention_max_positions when set, else chunk_size "
                    f"when set, else max_positions); got decoder "
                    f"length {query_offset + query_length} and encoder length {key_length}. Use shorter "
                    "sequences, a larger chunk_size/max_positions, or relative_positional_bias='rotary'"
                )
        return self.rel_pos_bias(query_length, key_length, query_offset)
