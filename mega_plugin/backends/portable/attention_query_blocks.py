"""Long attention frames on CPU: the reference arithmetic over slices of the queries.

Why: over one long frame (no chunking) the reference builds (B, C, Lq, Lk) scores and
weights; each query row is normalised on its own, so slices of the queries give the same
result with (B, C, Q, Lk) temporaries that stay in cache. Measured on the benchmark
configuration (2 cores, fp32, length 2048 unchunked) the whole matmul-softmax-matmul was
faster than SDPA's fused kernel, which must recompute q.k once per value head because MEGA's
values are wider than its queries (docs/performance.md). Slicing also bounds the memory.

Every activation, mask and ``need_weights`` is served (the weights are concatenated);
attention dropout while training is declined (its random draws would come in another order).
"""

from __future__ import annotations

import dataclasses
from typing import Final

import torch
from torch import Tensor

from ...core.ops import AttentionCall, AttentionOptions, SUPPORTED, Support, declined
from ...core.ops.attention.reference import reference_attention

MIN_KEYS: Final = 1024
"""Shorter frames (chunks) go to the reference kernel, whose temporaries are small already."""

SLICE_ELEMENTS: Final = 1 << 19
"""Score elements per query slice (2 MiB in fp32): B * C * Q * Lk.

Below glibc's dynamic mmap threshold once the layer's 4 MiB group tensors have been freed, so
the slices' scores and weights reuse heap memory instead of faulting in fresh pages (4 MiB
slices: 581 against 459 ms per forward at B 4, L 2048 unchunked, alternating in one process)."""


def query_slice_rows(rows: int, key_length: int, query_length: int) -> int:
    """Queries per slice so that ``rows * Q * key_length`` is about :data:`SLICE_ELEMENTS`."""
    return max(1, min(query_length, SLICE_ELEMENTS // max(1, rows * key_length)))


def query_blocks_attention(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: AttentionOptions,
) -> tuple[Tensor, Tensor | None]:
    """The ``query_blocks`` attention kernel (conventions in :mod:`mega_plugin.core.ops.conventions`)."""
    if options.training and options.dropout_p > 0:
        raise ValueError("the query_blocks attention kernel does not serve attention dropout while training")
    batch, chunks, query_length, _ = query.shape
    step = query_slice_rows(batch * chunks, key.shape[-2], query_length)
    outputs: list[Tensor] = []
    weights: list[Tensor] = []
    for start in range(0, query_length, step):
        stop = min(start + step, query_length)
        output, slice_weights = reference_attention(
            query[:, :, start:stop],
            key,
            value,
            None if bias is None else bias[start:stop],
            key_mask,
            dataclasses.replace(options, query_offset=options.query_offset + start),
        )
        outputs.append(output)
        if slice_weights is not None:
            weights.append(slice_weights)
    if len(outputs) == 1:
        return outputs[0], (weights[0] if weights else None)
    return torch.cat(outputs, dim=2), (torch.cat(weights, dim=2) if weights else None)


def query_blocks_supports(call: AttentionCall) -> Support:
    """Accept long frames on CPU without attention dropout."""
    device = call.device
    if device is not None and torch.device(device).type != "cpu":
        return declined(f"device {device}: fused SDPA kernels serve long frames on accelerators")
    if call.dropout_p > 0.0:
        return declined("attention dropout while training: the random draws would come in another order")
    if call.key_length < MIN_KEYS:
        return declined(f"key_length {call.key_length} < {MIN_KEYS}: the reference's temporaries are small already")
    return SUPPORTED
