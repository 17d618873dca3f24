"""The example plugin's kernels, taken from the registry, agree with the reference kernels."""

from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch

import mega_plugin.registry as registry
from mega_plugin.core.ops import AttentionOptions, EmaCoefficients, EmaOptions, reference_attention, reference_ema

ATOL = RTOL = 1e-5


def _coefficients(dim: int, ema: int) -> EmaCoefficients:
    damping = torch.sigmoid(torch.randn(dim, ema))
    decay = torch.sigmoid(torch.randn(dim, ema))
    expansion = torch.randn(dim, ema)
    projection = torch.randn(dim, ema)
    return EmaCoefficients(
        input_gain=damping * expansion, decay=1.0 - damping * decay, output_gain=projection / math.sqrt(ema)
    )


def _kernel(op: str, name: str):  # noqa: ANN202
    return {spec.name: spec for spec in registry.list_kernels(op)}[name].fn


@pytest.mark.parametrize(
    "batch, length, dim, ema, with_state",
    [(2, 37, 8, 4, False), (1, 16, 4, 2, False), (3, 1, 8, 16, True), (2, 100, 6, 4, True), (1, 0, 4, 2, True)],
    ids=["B2-L37-D8-N4", "B1-L16-D4-N2", "B3-L1-D8-N16-state", "B2-L100-D6-N4-state", "B1-L0-D4-N2-state"],
)
def test_example_ema_matches_the_reference(
    example_plugin: ModuleType, batch: int, length: int, dim: int, ema: int, with_state: bool
) -> None:
    scan = _kernel("ema", "example_scan")
    coefficients = _coefficients(dim, ema)
    x = torch.randn(batch, length, dim)
    state = torch.randn(batch, dim, ema) if with_state else None
    options = EmaOptions(bidirectional=False, truncation=None, return_state=True)
    output, final = scan(x, coefficients, state, options)
    expected, expected_final = reference_ema(x, coefficients, state, options)
    torch.testing.assert_close(output, expected, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(final, expected_final, atol=ATOL, rtol=RTOL)
    assert output.dtype == torch.float32


def _masks(batch: int, chunks: int, keys: int) -> torch.Tensor:
    mask = torch.rand(batch, chunks, keys) > 0.3
    mask[0, -1] = False  # a chunk made only of padding
    mask[-1, 0, : keys // 2] = False  # left padding
    return mask


@pytest.mark.parametrize(
    "causal, masked, query_length, key_length",
    [(False, False, 8, 8), (True, False, 8, 8), (False, True, 8, 8), (True, True, 8, 8), (True, True, 3, 8)],
    ids=["L8-full", "L8-causal", "L8-mask", "L8-causal-mask", "Lq3-Lk8-offset5-causal-mask"],
)
def test_example_attention_matches_the_reference(
    example_plugin: ModuleType, causal: bool, masked: bool, query_length: int, key_length: int
) -> None:
    sdpa = _kernel("attention", "example_sdpa")
    batch, chunks, shared, values = 2, 3, 4, 6
    query = torch.randn(batch, chunks, query_length, shared)
    key = torch.randn(batch, chunks, key_length, shared)
    value = torch.randn(batch, chunks, key_length, values)
    bias = torch.randn(query_length, key_length)
    key_mask = _masks(batch, chunks, key_length) if masked else None
    options = AttentionOptions(
        activation="softmax", causal=causal, query_offset=key_length - query_length, scale=shared**-0.5,
        dropout_p=0.0, training=False, need_weights=False,
    )
    output, weights = sdpa(query, key, value, bias, key_mask, options)
    expected, _ = reference_attention(query, key, value, bias, key_mask, options)
    assert weights is None
    torch.testing.assert_close(output, expected, atol=ATOL, rtol=RTOL)
