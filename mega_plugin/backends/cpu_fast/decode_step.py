"""One decoding step of a causal gated-attention layer: a single new token against its state.

Generating token by token calls every layer with one token (B, 1, D) and the layer's streaming
state. The core's path serves any length, so each step pays for machinery one token does not
need: a kernel chosen for the EMA and for the attention, chunk framing, and a causal mask built
for a query that sees every key of its frame anyway. For one token the layer reduces to

    h' = input_gain * x + decay * h,   y = sum_n output_gain * h'      (B, D, N) -> (B, D)

(the core's recurrent EMA, in its order of operations) and one query row of the core's
reference attention over the current chunk's keys, which grow in place (:mod:`.growing_keys`).
:func:`decode_step` runs exactly that and
the core's own gate and output functions, so it returns what the core returns, in fewer ops.

It serves a call only when that holds: no gradient recorded, no dropout active, an untruncated
EMA with a state to continue (the first call, the prompt, goes through the core), no attention
weights asked for, not while a graph is captured, not with offloaded weights, and the ``auto`` kernels (a kernel named in
the config is the caller's choice: it runs through the core).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.gated_attention import AttentionResult, MovingAverageGatedAttention
from ...core.memo import records_grad
from ...core.ops import AttentionOptions
from ...core.ops.attention.reference import reference_attention
from ...core.state import LayerState, merge_key_masks
from ...core.tracing import capturing_graph
from .growing_keys import append_position
from .linear import project_rows
from .plan import weights_elsewhere


def serves_step(
    layer: MovingAverageGatedAttention,
    x: Tensor,
    *,
    state: LayerState | None,
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
        and state is not None
        and state.ema is not None
        and ema.truncation is None
        and not ema.bidirectional
        and layer.kernel_name == "auto"
        and ema.kernel_name == "auto"
        and (not layer.training or max(dropouts, default=0.0) == 0.0)
        and not capturing_graph()  # compile, export, jit, fx: the core's forward
        and not weights_elsewhere(layer)  # offloaded: the core's module calls bring the weights in
        and not records_grad(itertools.chain((x, state.ema), layer.parameters()))
    )


def decode_step(
    layer: MovingAverageGatedAttention,
    x: Tensor,
    *,
    state: LayerState,
    key_mask: Tensor | None,
    update_state: bool,
) -> AttentionResult:
    """``layer``'s output for one new token ``x`` (B, 1, D) after ``state`` (see :func:`serves_step`).

    ``key_mask`` (B, 1) bool marks whether the new token is real (None: it is).
    """
    batch = x.shape[0]
    normed = layer.norm(x) if layer.prenorm else x  # (B, 1, D)

    # The EMA recurrence for one token, in the core's recurrent order and fp32.
    coefficients = layer.ema_gate.coefficients()
    signal = normed if key_mask is None else normed.masked_fill(~key_mask.unsqueeze(-1), 0.0)
    ema_state = coefficients.input_gain.float() * signal[:, 0, :, None].float() + coefficients.decay.float() * state.ema.float()
    ema = (ema_state * coefficients.output_gain.float()).sum(-1).unsqueeze(1)  # (B, 1, D)
    mixed = F.silu(torch.addcmul(ema.to(x.dtype), normed, layer.ema_gate.residual_weight))

    value = layer.activation(project_rows(layer.v_proj, normed))  # (B, 1, V)
    gates = layer.gates(project_rows(layer.mx_proj, mixed))

    # One query at the end of its frame: it sees every key of the frame that is real, so the
    # causal mask is all True and is left out.
    cached = state.cached_length
    chunk = layer.chunk_size
    keys, values = append_position(
        state.keys if cached else None, state.values if cached else None, gates.key, value, capacity=chunk
    )  # (B, T, Z), (B, T, V): views of a buffer the next step fills in place
    keys_real = (
        merge_key_masks(state.key_mask, key_mask, cached, 1, batch=batch, device=x.device) if cached else key_mask
    )  # (B, T) | None
    frame = cached + 1
    options = AttentionOptions(
        activation=layer.attention_activation,
        causal=False,
        query_offset=0,
        scale=layer.scale,
        dropout_p=0.0,
        training=False,
        need_weights=False,
    )
    attended, _ = reference_attention(
        gates.query.unsqueeze(1),
        keys.unsqueeze(1),
        values.unsqueeze(1),
        layer.rel_pos_bias(1, frame, cached),
        None if keys_real is None else keys_real.unsqueeze(1),
        options,
    )  # (B, 1, 1, V)
    hidden = layer.output(x, gates, attended.squeeze(1))

    new_state = None
    if update_state:
        start = 0 if chunk is None else frame - frame % chunk  # the current chunk's first key
        new_state = LayerState(
            ema=ema_state,
            keys=keys if start == 0 else keys[:, start:],  # the view itself: its buffer grows next step
            values=values if start == 0 else values[:, start:],
            key_mask=None if keys_real is None else keys_real[:, start:],
        )
    return AttentionResult(hidden=hidden, weights=None, state=new_state)
