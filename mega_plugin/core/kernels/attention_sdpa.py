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

from typing import Any, Final, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention_reference import causal_allowed

MIN_CPU_KEYS: Final = 1024
"""On CPU, shorter frames run as fast through the reference and gain little memory."""


def sdpa_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    bias: Tensor | None,
    key_mask: Tensor | None,
    *,
    activation: str,
    causal: bool,
    query_offset: int,
    scale: float,
    dropout_p: float,
    training: bool,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """The ``sdpa`` attention kernel (signature in :mod:`.signatures`)."""
    if activation != "softmax":
        raise ValueError(f"the sdpa attention kernel serves activation='softmax' only, got {activation!r}")
    if need_weights or key_mask is not None or (training and dropout_p > 0):
        raise ValueError("the sdpa attention kernel serves calls without need_weights, key_mask or dropout")
    query_length, key_length = query.shape[-2], key.shape[-2]
    mask = None if bias is None else bias.to(query.dtype)
    if causal:
        allowed = causal_allowed(query_length, key_length, query_offset, query.device)  # (Lq, Lk)
        if mask is None:
            mask = torch.zeros(query_length, key_length, dtype=query.dtype, device=query.device)
        mask = mask.masked_fill(~allowed, float("-inf"))
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
    return output, None


def sdpa_supports(call: Mapping[str, Any]) -> str | None:
    """Accept softmax calls without weights, padding or dropout; on CPU long frames only."""
    if call.get("activation") != "softmax":
        return f"activation={call.get('activation')!r}: only softmax is fused"
    if call.get("need_weights"):
        return "need_weights=True: SDPA does not return the weights"
    if call.get("dropout_p", 0.0) > 0.0:
        return "attention dropout while training: SDPA's random stream differs from the reference's"
    if call.get("has_key_mask", True):
        return "a padding mask (or a caller that does not say): the reference handles padded chunks"
    device = call.get("device")
    if (device is None or torch.device(device).type == "cpu") and call.get("key_length", 0) < MIN_CPU_KEYS:
        return f"key_length {call.get('key_length')} < {MIN_CPU_KEYS} on CPU: matmul-softmax-matmul is as fast"
    return None
