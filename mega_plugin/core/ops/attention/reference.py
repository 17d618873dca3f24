"""Reference single-head MEGA attention (softmax, laplace, relu2) over chunks.

Shapes follow :mod:`mega_plugin.core.ops.calls`. Masks are combined once into
``allowed`` (B or 1, C or 1, Lq, Lk); nothing of size Lq x Lk is built when no mask applies.
"""

from __future__ import annotations

import math
from typing import Callable, Final

import torch
import torch.nn.functional as F
from torch import Tensor

from ..calls import AttentionOptions

LAPLACE_MU: Final = math.sqrt(0.5)
LAPLACE_SIGMA: Final = math.sqrt(0.25 / math.pi)


def laplace(x: Tensor) -> Tensor:
    """Laplace attention function: the normal CDF with mean sqrt(1/2) and std sqrt(1/(4 pi))."""
    return 0.5 * (1.0 + torch.erf((x - LAPLACE_MU) / (LAPLACE_SIGMA * math.sqrt(2.0))))


def relu2(x: Tensor) -> Tensor:
    """Squared ReLU attention function."""
    return torch.square(F.relu(x))


ELEMENT_FUNCTIONS: Final = {"laplace": laplace, "relu2": relu2}


def causal_allowed(query_length: int, key_length: int, query_offset: int, device: torch.device) -> Tensor:
    """(Lq, Lk) bool: query i (at key position query_offset + i) sees keys j <= that position."""
    query_positions = torch.arange(query_length, device=device).unsqueeze(1) + query_offset
    return torch.arange(key_length, device=device).unsqueeze(0) <= query_positions


def allowed_mask(
    key_mask: Tensor | None,
    *,
    causal: bool,
    query_length: int,
    key_length: int,
    query_offset: int,
    device: torch.device,
) -> Tensor | None:
    """Which (query, key) pairs may interact: (B|1, C|1, Lq, Lk) bool, or None when all may."""
    allowed = None
    if causal:
        allowed = causal_allowed(query_length, key_length, query_offset, device).view(
            1, 1, query_length, key_length
        )
    if key_mask is not None:
        keys = key_mask.unsqueeze(-2)  # (B, C, 1, Lk)
        allowed = keys if allowed is None else allowed & keys
    return allowed


def softmax_allowed(
    key_mask: Tensor | None, *, causal: bool, query_length: int, key_length: int, query_offset: int, device: torch.device
) -> Tensor | None:
    """:func:`allowed_mask` for softmax attention: ``key_mask`` (..., Lk) of a frame made only of
    padding is left unmasked, as the reference does (no NaN rows)."""
    if key_mask is not None:
        key_mask = key_mask | ~key_mask.any(dim=-1, keepdim=True)
    return allowed_mask(
        key_mask, causal=causal, query_length=query_length, key_length=key_length, query_offset=query_offset, device=device
    )


def reference_attention(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: AttentionOptions,
    *,
    matmul: Callable[[Tensor, Tensor], Tensor] = torch.matmul,
) -> tuple[Tensor, Tensor | None]:
    """The ``reference`` attention kernel (matmul, mask, normalise, matmul).

    ``matmul`` does its two products (``q @ k.T``, ``w @ v``): other kernels reuse the
    arithmetic with their own GEMMs (a backend's per-frame matmul).
    """
    activation, causal = options.activation, options.causal
    query_length, key_length = query.shape[-2], key.shape[-2]
    allowed = (softmax_allowed if activation == "softmax" else allowed_mask)(
        key_mask,
        causal=causal,
        query_length=query_length,
        key_length=key_length,
        query_offset=options.query_offset,
        device=query.device,
    )
    scores = matmul(query, key.transpose(-1, -2))  # (B, C, Lq, Lk)
    if activation == "softmax":
        scores = scores * options.scale
        if bias is not None:
            scores = scores + bias
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
        if allowed is not None:
            # A query that may see no key at all (left padding under a causal mask) gets zeros.
            weights = weights.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
    else:
        function = ELEMENT_FUNCTIONS.get(activation)
        if function is None:
            raise ValueError(
                f"attention activation={activation!r} is unknown; allowed values: softmax, laplace, relu2"
            )
        if allowed is None:
            scores = scores / key_length
        else:
            # Each query normalises by the number of keys it may see (at least one).
            counts = allowed.sum(dim=-1, keepdim=True).clamp(min=1).to(scores.dtype)
            scores = scores / counts
        if bias is not None:
            scores = scores + bias
        weights = function(scores)
        if allowed is not None:
            weights = weights * allowed.to(weights.dtype)
    dropped = F.dropout(weights, p=options.dropout_p, training=options.training) if options.dropout_p > 0 else weights
    output = matmul(dropped.to(value.dtype), value)
    return output, (weights if options.need_weights else None)
