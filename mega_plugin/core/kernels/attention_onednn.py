"""The ``onednn`` attention kernel: the reference arithmetic, one frame at a time, in oneDNN.

Why: the batched ``torch.matmul`` of the reference runs MKL's AVX2 code on CPUs that are not
Intel's (``onednn.py``). One frame (a chunk, or a whole unchunked sequence) at a time, both
products run as oneDNN GEMMs at 2-3x the speed on the benchmark machine (chunk 256:
``q @ k.T`` 14 -> 4.6 ms, ``w @ v`` 59 -> 25 ms per layer at length 8192, batch 4), and every
(Lq, Lk) temporary is one frame's, which stays in cache. Long frames are further cut into
query slices as in ``attention_query_blocks.py`` (each query row is normalised on its own).

Every activation, mask, ``query_offset`` and ``need_weights`` is served, with gradients;
attention dropout while training is declined (its random draws would come in another order).
"""

from __future__ import annotations

from typing import Any, Final, Mapping

import torch
from torch import Tensor

from .attention_query_blocks import query_slice_rows
from .attention_reference import masked_attention
from .onednn import matmul_nt, unsupported_context, unsupported_tensor

MIN_FRAME_ELEMENTS: Final = 128 * 128
"""Smaller frames (Lq * Lk) go to the reference kernel: one batched matmul over many tiny
frames costs less than a Python loop over them."""


def frame_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for one frame: (1, 1, M, K) @ (1, 1, K, N) -> (1, 1, M, N) in oneDNN.

    ``b`` is read transposed as it lies (``k.T`` is then the contiguous key, ``v`` a strided view).
    """
    rows, inner = a.shape[-2:]
    left, right = a.reshape(rows, inner), b.reshape(inner, -1).t()
    if unsupported_tensor(left) or unsupported_tensor(right):  # e.g. a broadcast operand
        return torch.matmul(a, b)
    return matmul_nt(left, right).view(1, 1, rows, -1)


def onednn_attention(
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
    """The ``onednn`` attention kernel (signature in :mod:`.signatures`)."""
    if training and dropout_p > 0:
        raise ValueError("the onednn attention kernel does not serve attention dropout while training")
    batch, chunks, query_length, _ = query.shape
    key_length, value_size = key.shape[-2], value.shape[-1]
    step = query_slice_rows(1, key_length, query_length)
    recording = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (query, key, value, bias)
    )
    # No grad: each slice is copied into one output (and weights) tensor as it is done, so only
    # one slice's temporaries live at a time. With grad: slices are joined once, at the end.
    output = None if recording else query.new_empty(batch, chunks, query_length, value_size)
    weights = None
    if need_weights and not recording:
        weights = query.new_empty(batch, chunks, query_length, key_length)
    outputs: list[Tensor] = []
    all_weights: list[Tensor] = []
    for b in range(batch):
        for c in range(chunks):
            frame = (slice(b, b + 1), slice(c, c + 1))
            for start in range(0, query_length, step):
                stop = min(start + step, query_length)
                slice_output, slice_weights = masked_attention(
                    query[frame + (slice(start, stop),)],
                    key[frame],
                    value[frame],
                    None if bias is None else bias[start:stop],
                    None if key_mask is None else key_mask[frame],
                    activation=activation,
                    causal=causal,
                    query_offset=query_offset + start,
                    scale=scale,
                    dropout_p=0.0,
                    training=training,
                    need_weights=need_weights,
                    matmul=frame_matmul,
                )
                if output is None:
                    outputs.append(slice_output)
                    if slice_weights is not None:
                        all_weights.append(slice_weights)
                    continue
                output[b, c, start:stop] = slice_output[0, 0]
                if weights is not None and slice_weights is not None:
                    weights[b, c, start:stop] = slice_weights[0, 0]
    if output is not None:
        return output, weights
    return _join(outputs, batch, chunks), (_join(all_weights, batch, chunks) if need_weights else None)


def _join(slices: list[Tensor], batch: int, chunks: int) -> Tensor:
    """(B, C, Lq, F) from (1, 1, q, F) slices listed frame by frame, query slices in order."""
    per_frame = len(slices) // (batch * chunks)
    frames = [
        torch.cat(slices[index : index + per_frame], dim=2) if per_frame > 1 else slices[index]
        for index in range(0, len(slices), per_frame)
    ]
    return torch.cat(frames, dim=0).view(batch, chunks, *frames[0].shape[2:])


def onednn_attention_supports(call: Mapping[str, Any]) -> str | None:
    """Accept fp32 CPU frames of at least :data:`MIN_FRAME_ELEMENTS` without attention dropout."""
    if call.get("dropout_p", 0.0) > 0.0:
        return "attention dropout while training: the random draws would come in another order"
    frame = call.get("query_length", 0) * call.get("key_length", 0)
    if frame < MIN_FRAME_ELEMENTS:
        return f"frames of {frame} < {MIN_FRAME_ELEMENTS} scores: one batched matmul is faster"
    return unsupported_context(device=call.get("device"), dtype=call.get("dtype"))
