"""Inputs of the attention kernels and the parity cases every kernel that slices frames is run on."""

from __future__ import annotations

from typing import Any, Final

import pytest
import torch
from torch import Tensor

from mega_plugin.core.ops import AttentionOptions

ATTENTION_CASE_FIELDS: Final = "batch,chunks,query_length,key_length,query_offset,causal,activation,padded"
ATTENTION_CASES: Final = [
    # (batch, chunks, query_length, key_length, query_offset, causal, activation, padded)
    pytest.param(2, 1, 37, 37, 0, False, "softmax", False, id="B2-L37-softmax"),
    pytest.param(2, 3, 16, 16, 0, True, "softmax", True, id="B2-C3-L16-causal-padded"),
    pytest.param(1, 1, 5, 21, 16, True, "softmax", False, id="B1-Lq5-Lk21-offset16-causal"),
    pytest.param(2, 1, 23, 23, 0, True, "laplace", True, id="B2-L23-laplace-causal-padded"),
    pytest.param(2, 2, 19, 19, 0, False, "relu2", True, id="B2-C2-L19-relu2-padded"),
    pytest.param(1, 2, 7, 19, 12, True, "relu2", True, id="B1-C2-Lq7-Lk19-offset12-relu2-causal-padded"),
]
"""Attention-kernel calls: every activation, causal offsets, padding (a fully padded frame)."""


def attention_options(**overrides: Any) -> AttentionOptions:
    """The options of an attention kernel call: softmax, bidirectional, no offset, scale 0.3,
    no dropout, eval, no weights; ``overrides`` replace any of them."""
    base: dict[str, Any] = dict(
        activation="softmax",
        causal=False,
        query_offset=0,
        scale=0.3,
        dropout_p=0.0,
        training=False,
        need_weights=False,
    )
    return AttentionOptions(**{**base, **overrides})


def attention_inputs(
    batch: int, chunks: int, query_length: int, key_length: int, *, padded: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """query (B, C, Lq, 8), key (B, C, Lk, 8), value (B, C, Lk, 12), bias (Lq, Lk), key_mask or None."""
    generator = torch.Generator().manual_seed(query_length * 31 + key_length)
    query = torch.randn(batch, chunks, query_length, 8, generator=generator)
    key = torch.randn(batch, chunks, key_length, 8, generator=generator)
    value = torch.randn(batch, chunks, key_length, 12, generator=generator)
    bias = torch.randn(query_length, key_length, generator=generator)
    key_mask = None
    if padded:
        key_mask = torch.rand(batch, chunks, key_length, generator=generator) > 0.3
        key_mask[0, 0] = False  # a fully padded frame
    return query, key, value, bias, key_mask
