"""The ``onednn`` attention kernel: the reference arithmetic, one frame at a time, in oneDNN.

Why: the batched ``torch.matmul`` of the reference runs MKL's AVX2 code on CPUs that are not
Intel's (``onednn.py``). One frame (a chunk, or a whole unchunked sequence) at a time, both
products run as oneDNN GEMMs at 2-3x the speed on the benchmark machine (chunk 256:
``q @ k.T`` 14 -> 4.6 ms, ``w @ v`` 59 -> 25 ms per layer at length 8192, batch 4), and every
(Lq, Lk) temporary is one frame's, which stays in cache. Long frames are further cut into
query slices as in ``attention_query_blocks.py`` (each query row is normalised on its own).

Every activation, mask, ``query_offset`` and ``need_weights`` is served, with gradients;
attention dropout while training is declined (its random draws would come in another order).
Without autograd, softmax slices run in one scores buffer (:func:`softmax_slice_in_place`).
"""

from __future__ import annotations

import dataclasses
from typing import Final

import torch
from torch import Tensor

from ...core.memo import records_grad
from ...core.ops import AttentionCall, AttentionOptions, Support, declined
from ...core.ops.attention.reference import reference_attention, softmax_allowed
from ..portable.attention_query_blocks import query_slice_rows
from .onednn import fused_add_available, matmul_nt, matmul_nt_add, serves, unsupported_tensor

MIN_FRAME_ELEMENTS: Final = 128 * 128
"""Smaller frames (Lq * Lk) go to the reference kernel: one batched matmul over many tiny
frames costs less than a Python loop over them."""


def frame_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for one frame: (..., M, K) @ (..., K, N) -> (..., M, N), leading dims all 1, in oneDNN.

    ``b`` is read transposed as it lies (``k.T`` is then the contiguous key, ``v`` a strided view).
    """
    rows, inner = a.shape[-2:]
    product = matmul_nt(a.reshape(rows, inner), b.reshape(inner, -1).t())
    return product.view(*a.shape[:-1], -1)


def softmax_slice_in_place(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: AttentionOptions,
) -> tuple[Tensor, Tensor]:
    """The reference's softmax attention for one slice of one frame, without autograd, in one buffer.

    query (Lq, Z), key (Lk, Z), value (Lk, V), bias (Lq, Lk) or None, key_mask (Lk,) or None;
    returns the output (Lq, V) and the weights (Lq, Lk), which are the scores' own buffer.

    Why: the reference sweeps the (Lq, Lk) scores four times (scale, bias, mask, softmax), each
    into a new tensor; at 256 x 2048 scores those sweeps and fresh pages cost about half the time
    of the two GEMMs. Here the scale multiplies the (Lq, Z) query instead (rounding then differs
    by an ulp unless the scale is a power of two), the bias joins the GEMM's output tiles
    (oneDNN's post-op), and the mask and the softmax write into the scores.
    """
    scaled = query * options.scale
    if bias is not None and fused_add_available().ok and unsupported_tensor(bias) is None and bias.is_contiguous():
        scores = matmul_nt_add(scaled, key, bias)
    else:
        scores = matmul_nt(scaled, key)
        if bias is not None:
            scores.add_(bias)
    allowed = softmax_allowed(
        key_mask,
        causal=options.causal,
        query_length=query.shape[0],
        key_length=key.shape[0],
        query_offset=options.query_offset,
        device=query.device,
    )
    if allowed is not None:
        allowed = allowed.reshape(allowed.shape[-2:])  # (Lq | 1, Lk): its leading dims are all 1
        scores.masked_fill_(~allowed, float("-inf"))
    torch.ops.aten._softmax.out(scores, -1, False, out=scores)  # row by row: reads each row before writing it
    if allowed is not None:
        # A query that may see no key at all (left padding under a causal mask) gets zeros.
        scores.masked_fill_(~allowed.any(dim=-1, keepdim=True), 0.0)
    return matmul_nt(scores, value.t()), scores


def onednn_attention(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, options: AttentionOptions,
) -> tuple[Tensor, Tensor | None]:
    """The ``onednn`` attention kernel (conventions in :mod:`mega_plugin.core.ops.conventions`)."""
    if options.training and options.dropout_p > 0:
        raise ValueError("the onednn attention kernel does not serve attention dropout while training")
    if any(unsupported_tensor(t) for t in (query, key, value)):  # e.g. a broadcast or empty operand
        return reference_attention(query, key, value, bias, key_mask, options)
    need_weights = options.need_weights
    batch, chunks, query_length, _ = query.shape
    key_length, value_size = key.shape[-2], value.shape[-1]
    frames = batch * chunks
    step = query_slice_rows(1, key_length, query_length)
    starts = range(0, query_length, step)
    biases = [None if bias is None else bias[start : start + step] for start in starts]
    slice_options = [dataclasses.replace(options, query_offset=options.query_offset + start) for start in starts]
    # Per-frame views made once (a Python loop over frames pays per op): (Lq, Z), (Lk, Z), (Lk, V), (Lk,).
    queries = query.reshape(frames, query_length, -1).unbind(0)
    keys = key.reshape(frames, key_length, -1).unbind(0)
    values = value.reshape(frames, key_length, value_size).unbind(0)
    masks = [None] * frames if key_mask is None else key_mask.reshape(frames, key_length).unbind(0)
    recording = records_grad((query, key, value, bias))
    # No grad: each slice is copied into one output (and weights) tensor as it is done, so only
    # one slice's temporaries live at a time. With grad: slices are joined once, at the end.
    outputs: list[Tensor] = []
    all_weights: list[Tensor] = []
    output_frames = weight_frames = None
    if not recording:
        output = query.new_empty(batch, chunks, query_length, value_size)
        output_frames = output.view(frames, query_length, value_size).unbind(0)
        weights = query.new_empty(batch, chunks, query_length, key_length) if need_weights else None
        if weights is not None:
            weight_frames = weights.view(frames, query_length, key_length).unbind(0)
    in_place = not recording and options.activation == "softmax"
    for frame in range(frames):
        for start, slice_bias, options_of_slice in zip(starts, biases, slice_options):
            if in_place:
                slice_output, slice_weights = softmax_slice_in_place(
                    queries[frame][start : start + step], keys[frame], values[frame], slice_bias, masks[frame], options_of_slice
                )
                output_frames[frame][start : start + step].copy_(slice_output)
                if weight_frames is not None:
                    weight_frames[frame][start : start + step].copy_(slice_weights)
                continue
            slice_output, slice_weights = reference_attention(
                queries[frame][start : start + step],
                keys[frame],
                values[frame],
                slice_bias,
                masks[frame],
                options_of_slice,
                matmul=frame_matmul,
            )
            if output_frames is None:
                outputs.append(slice_output.view(-1, value_size))
                if slice_weights is not None:
                    all_weights.append(slice_weights.view(-1, key_length))
                continue
            output_frames[frame][start : start + step].copy_(slice_output.view(-1, value_size))
            if weight_frames is not None and slice_weights is not None:
                weight_frames[frame][start : start + step].copy_(slice_weights.view(-1, key_length))
    if output_frames is not None:
        return output, weights
    joined = torch.cat(outputs).view(batch, chunks, query_length, value_size)
    if not need_weights:
        return joined, None
    return joined, torch.cat(all_weights).view(batch, chunks, query_length, key_length)


def onednn_attention_supports(call: AttentionCall) -> Support:
    """Accept fp32 CPU frames of at least :data:`MIN_FRAME_ELEMENTS` without attention dropout."""
    if call.dropout_p > 0.0:
        return declined("attention dropout while training: the random draws would come in another order")
    frame = call.query_length * call.key_length
    if frame < MIN_FRAME_ELEMENTS:
        return declined(f"frames of {frame} < {MIN_FRAME_ELEMENTS} scores: one batched matmul is faster")
    return serves(call.device, call.dtype)
