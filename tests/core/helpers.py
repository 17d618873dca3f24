"""Shared builders of the core tests: a tiny model config and attention-kernel inputs."""

from __future__ import annotations

from typing import Any, Callable, Final

import pytest
import torch
from torch import Tensor

from mega_plugin.core.config import MegaCoreConfig


def tiny_config(**overrides: Any) -> MegaCoreConfig:
    """A 2-layer, 16-wide model without dropout; ``overrides`` replace any field."""
    fields = dict(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=24,
        nffn_hidden_size=20,
        shared_representation_size=8,
        ema_projection_size=4,
        num_hidden_layers=2,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        max_positions=64,
        initializer_range=0.1,
    )
    fields.update(overrides)
    return MegaCoreConfig(**fields)


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


def in_float64(fn: Callable[..., Tensor], *tensors: Tensor | None) -> tuple[Tensor, list[Tensor | None]]:
    """``fn`` on float64 copies of ``tensors``: its output and the gradients of a fixed upstream."""
    copies = [None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in tensors]
    out = fn(*copies)
    upstream = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)
    grads = torch.autograd.grad(out, [c for c in copies if c is not None and c.requires_grad], upstream)
    return out, list(grads)


def with_grads(fn: Callable[..., Tensor], *tensors: Tensor | None) -> tuple[Tensor, list[Tensor | None]]:
    out = fn(*tensors)
    upstream = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    grads = torch.autograd.grad(out, [t for t in tensors if t is not None and t.requires_grad], upstream)
    return out, list(grads)
