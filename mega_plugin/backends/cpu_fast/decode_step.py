"""One decoding step of a causal gated-attention layer: a single new token against its state.

Generating token by token calls every layer with one token (B, 1, D) and the layer's streaming
state. The core's path serves any length, so each step pays for machinery one token does not
need: a kernel chosen for the EMA and for the attention, chunk framing, the EMA coefficients
recomputed from their parameters, and a causal mask built for a query that sees every key of its
frame anyway. For one token the layer is the static decoder's step
(:func:`~mega_plugin.backends.token_step.step.attention_step`: the recurrent EMA, the
gates, one query row of the reference attention, the gated residual), which :func:`decode_step`
runs here on the layer's own state:

* the weights in the step's form are kept on the layer (:mod:`.step_weights`);
* the EMA state is advanced in a new tensor (a state stays a value: a cache may be reused);
* the current chunk's keys and values grow in place (:mod:`.growing_keys`): the step writes
  position T of their buffer, the state returns views of T + 1 positions;
* the query's relative bias row is read from the chunk's bias table, or computed by the layer's
  bias module as in the core (long chunks, no chunking).

It serves a call only when that gives the core's result: no gradient recorded, no dropout
active, no autocast, an untruncated EMA with a state to continue (the first call, the prompt,
goes through the core), a real new token (padding goes through the core), no attention weights
asked for, not while a graph is captured, not with offloaded weights, and the ``auto`` kernels
(a kernel named in the config is the caller's choice: it runs through the core).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from ...core.gated_attention import AttentionResult, MovingAverageGatedAttention
from ...core.memo import records_grad
from ...core.state import LayerState, merge_key_masks
from ...core.tracing import capturing_graph
from ..module_walk import weights_elsewhere
from ..token_step.buffers import LayerBuffers
from ..token_step.step import attention_step
from .growing_keys import grown_views, reserve_position
from .step_weights import step_weights


def serves_step(
    layer: MovingAverageGatedAttention,
    x: Tensor,
    *,
    state: LayerState | None,
    key_mask: Tensor | None,
    causal: bool,
    need_weights: bool,
    dropouts: tuple[float, ...],
) -> bool:
    """Whether :func:`decode_step` computes this call of ``layer`` exactly as the core would."""
    ema = layer.ema_gate
    return (
        x.dim() == 3
        and x.shape[1] == 1
        and causal
        and not need_weights
        and key_mask is None  # the core's None: every new token is real
        and state is not None
        and state.ema is not None
        and ema.truncation is None
        and not ema.bidirectional
        and layer.kernel_name == "auto"
        and ema.kernel_name == "auto"
        and (not layer.training or max(dropouts, default=0.0) == 0.0)
        and not torch.is_autocast_enabled(x.device.type)
        and not capturing_graph()  # compile, export, jit, fx: the core's forward
        and not weights_elsewhere(layer)  # offloaded: the core's module calls bring the weights in
        and not records_grad(itertools.chain((x, state.ema), layer.parameters()))
    )


def decode_step(layer: MovingAverageGatedAttention, x: Tensor, *, state: LayerState, update_state: bool) -> AttentionResult:
    """``layer``'s output for one new, real token ``x`` (B, 1, D) after ``state`` (see :func:`serves_step`)."""
    assert state.ema is not None
    batch = x.shape[0]
    cached = state.cached_length
    frame = cached + 1
    growth = reserve_position(
        state.keys if cached else None,
        state.values if cached else None,
        batch=batch,
        key_width=layer.shared_size,
        value_width=layer.value_size,
        dtype=x.dtype,
        device=x.device,
        capacity=layer.chunk_size,
    )  # (B, C, Z), (B, C, V) with positions 0 .. cached - 1 filled and position ``cached`` free
    key_mask = merge_key_masks(state.key_mask, None, cached, 1, batch=batch, device=x.device) if cached else None
    key_real = None if key_mask is None else key_mask.to(x.dtype)  # (B, frame) 1.0 / 0.0; the new token is real
    buffers = LayerBuffers(
        ema=state.ema.to(torch.float32, copy=True),  # advanced in place: the old state stays as it was
        keys=growth.keys,
        values=growth.values,
        key_real=key_real,
    )
    weights = step_weights(layer)
    if weights.slots is not None:  # the bias row from the frame table
        hidden = attention_step(weights.attention, buffers, x[:, 0], weights.slots[cached], frame)  # (B, D)
    else:
        index = torch.tensor([cached], device=x.device)
        bias = layer.rel_pos_bias(1, frame, cached)  # (1, frame)
        hidden = attention_step(weights.attention, buffers, x[:, 0], index, frame, bias=bias)
    keys, values = grown_views(growth)  # (B, frame, Z), (B, frame, V)

    new_state = None
    if update_state:
        chunk = layer.chunk_size
        start = 0 if chunk is None else frame - frame % chunk  # the current chunk's first key
        new_state = LayerState(
            ema=buffers.ema,
            keys=keys if start == 0 else keys[:, start:],  # the view itself: its buffer grows next step
            values=values if start == 0 else values[:, start:],
            key_mask=None if key_real is None else key_real[:, start:] != 0,
        )
    return AttentionResult(hidden=hidden.unsqueeze(1), weights=None, state=new_state)
