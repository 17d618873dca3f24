"""Softmax attention through ``torch.nn.functional.scaled_dot_product_attention``.

Why: for one long frame (no chunking) the reference builds (B, C, Lq, Lk) fp32 scores and
their softmax; SDPA's fused kernels stream over keys, so only the shared (Lq, Lk) bias is
ever materialised. Measured on a 2-core CPU it is *not* faster than matmul-softmax-matmul for
short chunks (see docs/performance.md), so it declines frames shorter than
:data:`MIN_CPU_KEYS` on CPU; on GPUs it serves every supported call.

Declined (the reference serves them): laplace/relu2, ``need_weights``, attention dropout
while training (SDPA's random stream differs from the reference's), and padding masks
(the reference's rules for fully padded chunks and empty causal rows need the explicit mask).
"""

from __future__ import annotations

from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.ops import AttentionCall, AttentionOptions, SUPPORTED, Support, declined
from ...core.ops.attention.reference import causal_allowed

MIN_CPU_KEYS: Final = 1024
"""On CPU, shorter frames run as fast through the reference and gain little memory."""


def sdpa_attention(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: AttentionOptions,
) -> tuple[Tensor, Tensor | None]:
    """The ``sdpa`` attention kernel (conventions in :mod:`mega_plugin.core.ops.conventions`)."""
    if options.activation != "softmax":
        raise ValueError(f"the sdpa attention kernel serves activation='softmax' only, got {options.activation!r}")
    if options.need_weights or key_mask is not None or (options.training and options.dropout_p > 0):
        raise ValueError("the sdpa attention kernel serves calls without need_weights, key_mask or dropout")
    query_length, key_length = query.shape[-2], key.shape[-2]
    mask = None if bias is None else bias.to(query.dtype)
    if options.causal:
        allowed = causal_allowed(query_length, key_length, options.query_offset, query.device)  # (Lq, Lk)
        if mask is None:
            mask = torch.zeros(query_length, key_length, dtype=query.dtype, device=query.device)
        mask = mask.masked_fill(~allowed, float("-inf"))
    return _fused(query, key, value, mask, scale=options.scale), None


def _fused(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, *, scale: float) -> Tensor:
    """SDPA over (B, C, L, Z) queries/keys and (B, C, L, V) values.

    The fused (flash) kernels need one head size for q, k and v; MEGA has V = 8 Z in the
    usual configurations. When Z divides V, the values are cut into V / Z heads of size Z
    that share q and k (expanded views, no copy): the fused kernel then runs, at the price
    of recomputing q.k per head. Otherwise SDPA's math path runs (correct, not lean).
    """
    query_size, value_size = query.shape[-1], value.shape[-1]
    if value_size == query_size or value_size % query_size != 0:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
    batch, chunks, key_length, _ = value.shape
    query_length = query.shape[-2]
    heads = value_size // query_size
    rows = batch * chunks
    # (B, C, Lk, V) -> (B*C, H, Lk, Z); queries and keys broadcast over the H heads.
    value_heads = value.reshape(rows, key_length, heads, query_size).transpose(1, 2)
    query_heads = query.reshape(rows, 1, query_length, query_size).expand(rows, heads, query_length, query_size)
    key_heads = key.reshape(rows, 1, key_length, query_size).expand(rows, heads, key_length, query_size)
    output = F.scaled_dot_product_attention(query_heads, key_heads, value_heads, attn_mask=mask, scale=scale)
    return output.transpose(1, 2).reshape(batch, chunks, query_length, value_size)


def sdpa_supports(call: AttentionCall) -> Support:
    """Accept softmax calls without weights, padding or dropout; on CPU long frames only."""
    if call.activation != "softmax":
        return declined(f"activation={call.activation!r}: only softmax is fused")
    if call.need_weights:
        return declined("need_weights=True: SDPA does not return the weights")
    if call.dropout_p > 0.0:
        return declined("attention dropout while training: SDPA's random stream differs from the reference's")
    if call.has_key_mask:
        return declined("a padding mask (or a caller that does not say): the reference handles padded chunks")
    device = call.device
    if (device is None or torch.device(device).type == "cpu") and call.key_length < MIN_CPU_KEYS:
        return declined(f"key_length {call.key_length} < {MIN_CPU_KEYS} on CPU: matmul-softmax-matmul is as fast")
    return SUPPORTED
