"""Moving-average equipped gated attention: the ``mega_layer`` sub-layer of a MEGA block.

For input X (B, L, D), with X' = Norm(X) before (pre-norm) or Norm applied after (post-norm),
the paper's equations (section 3.1-3.2)::

    X'' = EMA(X')                                   (B, L, D)   ema_gate
    V   = act(X' W_v + b_v)                          (B, L, V)   v_proj
    [u, z r, h_x] = X'' W_x + b_x                                mx_proj
    u = sigmoid(u),  Z, r = split(silu(z r))        update gate (D), shared Z (Z), reset gate (V)
    Q = Z * k_q + b_q,  K = Z * k_k + b_k           (B, L, Z)   qk_weight, qk_bias
    O = f(Q K^T + bias) V                            (B, L, V)   chunked single-head attention
    H = act(h_x + (O * r) W_h + b_h)                 (B, L, D)   h_proj
    Y = X + u * (H - X)

Submodule and parameter names match HF checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .chunking import attend_in_chunks
from .config import MegaCoreConfig
from .ema import MultiDimensionDampedEma
from .gated_sublayer import GatedSublayer
from .positional import relative_positional_bias
from .state import LayerState


@dataclass
class AttentionResult:
    """Output of one gated-attention call."""

    hidden: Tensor
    """(B, L, D) layer output."""

    weights: Tensor | None
    """(B, C, Lq, Lk) attention weights before dropout, when asked for."""

    state: LayerState | None
    """The updated streaming state, when asked for."""


@dataclass
class Gates:
    """``mx_proj``'s output split up: the update gate u (..., D) after its sigmoid, the reset gate
    r (..., V) after its silu, ``hx`` (..., D), and the query and key (..., Z)."""

    update: Tensor
    reset: Tensor
    hx: Tensor
    query: Tensor
    key: Tensor


class MovingAverageGatedAttention(GatedSublayer):
    """EMA, then single-head attention over chunks, gated by update and reset gates."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__(config)
        self.value_size = config.intermediate_size
        self.chunk_size = config.attention_chunk
        self.ema_gate = MultiDimensionDampedEma.from_config(config)
        self.v_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        # One projection yields the update gate (D), the shared q/k + reset gate (Z + V), and hx (D).
        self.mx_proj = nn.Linear(
            config.hidden_size, 2 * config.hidden_size + config.shared_representation_size + config.intermediate_size
        )
        self.h_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.qk_weight = nn.Parameter(torch.zeros(2, config.shared_representation_size))
        self.qk_bias = nn.Parameter(torch.zeros(2, config.shared_representation_size))
        self.rel_pos_bias = relative_positional_bias(config)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.qk_weight, mean=0.0, std=self.init_std)
        nn.init.zeros_(self.qk_bias)

    def forward(
        self,
        x: Tensor,
        *,
        key_mask: Tensor | None = None,
        causal: bool = False,
        state: LayerState | None = None,
        update_state: bool = False,
        need_weights: bool = False,
    ) -> AttentionResult:
        """``x`` (B, L, D); ``key_mask`` (B, L) bool for the new tokens; ``state`` from earlier calls."""
        normed = self.norm(x) if self.prenorm else x
        ema, ema_state, ema_window = self.ema_gate(
            normed,
            key_mask=key_mask,
            state=state.ema if state is not None else None,
            window=state.ema_window if state is not None else None,
            return_state=update_state,
        )  # (B, L, D)
        result = self.gated_attention(
            x, normed, ema, key_mask=key_mask, causal=causal, state=state, update_state=update_state, need_weights=need_weights
        )
        if result.state is not None:
            result.state.ema, result.state.ema_window = ema_state, ema_window
        return result

    def gated_attention(
        self,
        residual: Tensor,
        normed: Tensor,
        ema: Tensor,
        *,
        key_mask: Tensor | None = None,
        causal: bool = False,
        state: LayerState | None = None,
        update_state: bool = False,
        need_weights: bool = False,
    ) -> AttentionResult:
        """Everything after the EMA, for the layer input ``residual``, its norm and its EMA, each (B, L, D).

        It looks at most one chunk back (through ``state``), so it may also run on pieces of
        whole chunks.
        """
        value = self.activation(self.v_proj(normed))  # (B, L, V)
        gates = self.gates(self.mx_proj(self.dropout(ema)))
        attended, weights, new_state = attend_in_chunks(
            gates.query,
            gates.key,
            self.hidden_dropout(value),  # dropped after the EMA's dropout, the reference's draw order
            key_mask,
            chunk=self.chunk_size,
            bias=self.rel_pos_bias,
            attend=partial(self.attend_frames, causal=causal, need_weights=need_weights),
            state=state,
            update_state=update_state,
        )  # (B, L, V)
        return AttentionResult(hidden=self.output(residual, gates, attended), weights=weights, state=new_state)

    def gates(self, base: Tensor) -> Gates:
        """Split ``mx_proj``'s output (..., 2D + Z + V) into the gates, ``hx``, the query and the key."""
        update, shared_and_reset, hx = torch.split(
            base, [self.hidden_size, self.shared_size + self.value_size, self.hidden_size], dim=-1
        )
        shared, reset = torch.split(F.silu(shared_and_reset), [self.shared_size, self.value_size], dim=-1)
        return Gates(
            update=torch.sigmoid(update),
            reset=reset,
            hx=hx,
            query=torch.addcmul(self.qk_bias[0], shared, self.qk_weight[0]),
            key=torch.addcmul(self.qk_bias[1], shared, self.qk_weight[1]),
        )

    def output(self, residual: Tensor, gates: Gates, attended: Tensor) -> Tensor:
        """``Y = X + u * (act(hx + h_proj(O * r)) - X)``, normalised here when post-norm."""
        return self.gated_residual(residual, gates.update, self.activation(gates.hx + self.h_proj(attended * gates.reset)))
