"""Turning HF-style 0/1 attention masks into the core's (B, L) bool key masks.

The core marks real tokens with ``True`` and passes ``None`` when every token is real, which is
both the common case and exactly the reference's unmasked computation. Finding that out reads the
mask's values, which a captured graph (:func:`~.tracing.capturing_graph`) cannot: there the mask is
kept as given, and every layer applies it (an all-True mask changes no result).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .tracing import capturing_graph


def padding_to_key_mask(
    attention_mask: Tensor | None, *, batch: int, length: int, position: int
) -> Tensor | None:
    """HF-style (B, L) or (B, position + L) 0/1 mask -> (B, L) bool for the new tokens.

    Returns None when every token is real (the fast path, and exactly the reference's
    unmasked computation).
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] not in (
        length,
        position + length,
    ):
        expected = f"({batch}, {length})" + (f" or ({batch}, {position + length})" if position else "")
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {expected}")
    mask = attention_mask[:, -length:] if length else attention_mask[:, :0]
    mask = mask if mask.dtype == torch.bool else mask != 0
    return mask if capturing_graph() or not bool(mask.all()) else None


def encoder_key_mask(encoder_attention_mask: Tensor | None, *, batch: int, source_length: int) -> Tensor | None:
    """HF-style (B, S) 0/1 encoder mask -> (B, S) bool, or None when every encoder token is real."""
    if encoder_attention_mask is None:
        return None
    if encoder_attention_mask.dim() != 2 or tuple(encoder_attention_mask.shape) != (batch, source_length):
        raise ValueError(
            f"encoder_attention_mask has shape {tuple(encoder_attention_mask.shape)}, expected "
            f"({batch}, {source_length}) = (batch, encoder length) with 1 for real encoder tokens and 0 for padding"
        )
    mask = encoder_attention_mask if encoder_attention_mask.dtype == torch.bool else encoder_attention_mask != 0
    return mask if capturing_graph() or not bool(mask.all()) else None


def same_mask(first: Tensor | None, second: Tensor | None) -> bool:
    """True if two (B, S) bool masks from :func:`encoder_key_mask` agree (None means all real,
    and that function never returns an all-real tensor in eager calls). A captured graph cannot
    compare values and takes them as agreeing."""
    if capturing_graph():
        return True
    if first is None or second is None:
        return first is second
    return first.shape == second.shape and bool(torch.equal(first, second.to(first.device)))
