"""One decoding step of one MEGA block: a token per row (B, D) against fixed buffers.

The arithmetic is the core's, for a single query at the end of its frame (the core's
:mod:`~mega_plugin.core.gated_attention` gives the equations): the recurrent EMA
``h' = input_gain * x + decay * h``, ``y = sum_n output_gain * h'``; the gates; one query row of
the reference attention over the frame's slots; the gated residual; the NFFN. What differs is
only the layout: the state lives in :class:`~.buffers.LayerBuffers` written in place, and the
position enters as a tensor ``slot`` (0-d, int64), so that one compiled graph serves every
position. With ``visible`` (eager calls) the attention reads only the slots written so far;
without it (a compiled graph, fixed shapes) it reads all S slots and masks the later ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .buffers import LayerBuffers
from .weights import AttentionWeights, BlockWeights, FeedForwardWeights


def attend_slot(
    weights: AttentionWeights,
    buffers: LayerBuffers,
    query: Tensor,
    index: Tensor,
    visible: int | None,
    *,
    bias: Tensor | None = None,
) -> Tensor:
    """The attention of ``query`` (B, Z) at slot ``index`` (1,) over the frame: (B, V).

    ``bias`` (1, visible): the query's relative bias row, for weights without a frame table
    (``bias_rows`` None; eager calls only)."""
    keys, values, key_real = buffers.keys, buffers.values, buffers.key_real  # (B, S, Z), (B, S, V), (B, S)
    if visible is not None:  # every slot before ``visible`` is at or before the query's
        keys, values = keys[:, :visible], values[:, :visible]
        key_real = None if key_real is None else key_real[:, :visible]
    if bias is None:
        assert weights.bias_rows is not None, "weights without a frame table need the bias row"
        bias = weights.bias_rows.index_select(0, index)  # (1, S)
        if visible is not None:
            bias = bias[:, :visible]
    rows = query.unsqueeze(1)  # (B, 1, Z)
    if weights.element_function is None:  # softmax: scale * q.k + bias, -inf past the slot
        scores = torch.baddbmm(bias, rows, keys.transpose(1, 2), alpha=weights.scale)  # (B, 1, S)
        if key_real is not None:
            scores = scores.masked_fill(key_real.unsqueeze(1) == 0, float("-inf"))
        probabilities = torch.softmax(scores.float(), dim=-1).to(values.dtype)
        return torch.bmm(probabilities, values).squeeze(1)
    # laplace / relu2: f(q.k / keys seen + bias), zero for the keys not seen
    if visible is None:
        assert weights.visible_rows is not None
        allowed = weights.visible_rows.index_select(0, index)  # (1, S)
        allowed = allowed if key_real is None else allowed * key_real  # (B|1, S)
    else:
        allowed = key_real  # (B, visible) | None: the slots before ``visible`` are all seen
    if allowed is None:
        scores = torch.bmm(rows, keys.transpose(1, 2)) / visible + bias
        probabilities = weights.element_function(scores)
    else:
        counts = allowed.sum(dim=-1, keepdim=True).clamp(min=1).unsqueeze(-1)  # (B|1, 1, 1)
        scores = torch.bmm(rows, keys.transpose(1, 2)) / counts + bias
        probabilities = weights.element_function(scores) * allowed.unsqueeze(1)
    return torch.bmm(probabilities, values).squeeze(1)


def attention_step(
    weights: AttentionWeights,
    buffers: LayerBuffers,
    x: Tensor,
    index: Tensor,
    visible: int | None,
    *,
    bias: Tensor | None = None,
) -> Tensor:
    """The gated-attention sub-layer for ``x`` (B, D) at slot ``index`` (1,): (B, D).

    ``buffers`` are advanced in place: the EMA state, and the key and value at ``index``
    (``bias``: see :func:`attend_slot`)."""
    hidden_size, shared_size, value_size = weights.sizes
    normed = x if weights.pre_norm is None else weights.pre_norm(x)

    ema_state = buffers.ema  # (B, D, N) fp32, advanced in place
    ema_state.mul_(weights.decay).addcmul_(weights.input_gain, normed.unsqueeze(-1))
    ema = torch.linalg.vecdot(ema_state, weights.output_gain).to(x.dtype)  # (B, D)
    mixed = F.silu(torch.addcmul(ema, normed, weights.residual_weight))

    value = weights.activation(weights.value(normed))  # (B, V)
    update, shared_and_reset, hx = weights.mix(mixed).split([hidden_size, shared_size + value_size, hidden_size], dim=-1)
    shared, reset = F.silu(shared_and_reset).split([shared_size, value_size], dim=-1)
    query = torch.addcmul(weights.query_bias, shared, weights.query_weight)  # (B, Z)
    key = torch.addcmul(weights.key_bias, shared, weights.key_weight)

    buffers.keys.index_copy_(1, index, key.unsqueeze(1).to(buffers.keys.dtype))
    buffers.values.index_copy_(1, index, value.unsqueeze(1).to(buffers.values.dtype))
    if buffers.key_real is not None:
        buffers.key_real.index_fill_(1, index, 1.0)  # a generated token is real
    attended = attend_slot(weights, buffers, query, index, visible, bias=bias)  # (B, V)

    hidden = weights.activation(hx + weights.hidden(attended * reset))
    out = torch.addcmul(x, torch.sigmoid(update), hidden - x)  # X + u * (H - X)
    return out if weights.post_norm is None else weights.post_norm(out)


def feed_forward_step(weights: FeedForwardWeights, x: Tensor) -> Tensor:
    """The NFFN for ``x`` (B, D): (B, D)."""
    hidden = x if weights.pre_norm is None else weights.pre_norm(x)
    out = weights.fc2(weights.activation(weights.fc1(hidden))) + x
    return out if weights.post_norm is None else weights.post_norm(out)


def block_step(weights: BlockWeights, buffers: LayerBuffers, x: Tensor, slot: Tensor, visible: int | None) -> Tensor:
    """One block for ``x`` (B, D) at ``slot`` (0-d int64 tensor): (B, D)."""
    index = slot.view(1)
    hidden = attention_step(weights.attention, buffers, x, index, visible)
    return hidden if weights.ffn is None else feed_forward_step(weights.ffn, hidden)


__all__ = ["attend_slot", "attention_step", "block_step", "feed_forward_step"]
