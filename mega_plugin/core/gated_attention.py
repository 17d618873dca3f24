"""Moving-average equipped gated attention: the ``mega_layer`` sub-layer of a MEGA block."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import get_activation, get_activation_in_place
from .attention_dispatch import dispatch_attention
from .config import MegaCoreConfig
from .dense import project
from .dropout import MegaDropout
from .ema import MultiDimensionDampedEma
from .kernels.recording import records_grad
from .kernels.row_blocks import (
    BLOCK_ROWS,
    SEQUENCE_GROUP_ROWS,
    assemble,
    blocks_are_exact,
    is_channel_major,
    plan_row_blocks,
    split_rows,
    to_channel_major,
)
from .norms import SequenceNorm
from .positional import relative_positional_bias
from .state import LayerState, merge_key_masks


@dataclass
class AttentionResult:
    """Output of one gated-attention call."""

    hidden: Tensor
    """(B, L, D) layer output."""

    weights: Tensor | None
    """(B, C, Lq, Lk) attention weights before dropout, when asked for."""

    state: LayerState | None
    """The updated streaming state, when asked for."""


class MovingAverageGatedAttention(nn.Module):
    """EMA, then single-head attention over chunks, gated by update and reset gates.

    Submodule and parameter names match HF checkpoints (``norm``, ``ema_gate``, ``v_proj``,
    ``mx_proj``, ``h_proj``, ``qk_weight``, ``qk_bias``, ``rel_pos_bias``).
    """

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.shared_size = config.shared_representation_size
        self.value_size = config.intermediate_size
        self.chunk_size = config.attention_chunk
        self.prenorm = config.normalize_before_mega
        self.attention_activation = config.attention_activation
        self.kernel_name = config.attention_kernel
        self.init_std = config.initializer_range
        self.activation = get_activation(config.activation)
        self.activation_in_place = get_activation_in_place(config.activation)
        self.scale = self.shared_size**-0.5
        self.attention_dropout_p = config.attention_probs_dropout_prob
        self.block_rows: int | None = BLOCK_ROWS
        """Tokens per row block of the whole-sequence forward; None runs every op over the whole tensor."""

        self.dropout = MegaDropout(config.dropout_prob, featurewise=config.use_feature_dropout)
        self.hidden_dropout = MegaDropout(config.hidden_dropout_prob, featurewise=config.use_feature_dropout)
        self.norm = SequenceNorm(
            config.normalization_type, config.hidden_size, eps=config.norm_eps, affine=config.norm_affine
        )
        self.ema_gate = MultiDimensionDampedEma(
            config.hidden_size,
            config.ema_projection_size,
            bidirectional=config.bidirectional,
            truncation=config.truncation,
            kernel_name=config.ema_kernel,
            damping_std=config.ema_delta_alpha_range,
            expansion_std=config.ema_beta_range,
            projection_std=config.ema_gamma_omega_range,
        )
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
        overwrite_input: bool = False,
    ) -> AttentionResult:
        """``x`` (B, L, D); ``key_mask`` (B, L) bool for the new tokens; ``state`` from earlier calls.

        ``overwrite_input``: the caller hands ``x`` over (nobody reads it afterwards), so a
        no-grad pre-norm whole-sequence call may write its output into ``x`` block by block
        instead of into a fresh (B, L, D) tensor (first touch: ~8 ms of page faults per 32 MiB
        on CPU). Other calls ignore it.
        """
        if state is None and not update_state and not need_weights and self.block_rows and self._token_local():
            hidden = self._forward_blocked(x, key_mask=key_mask, causal=causal, overwrite_input=overwrite_input)
            return AttentionResult(hidden=hidden, weights=None, state=None)
        residual = x
        normed = self.norm(x) if self.prenorm else x
        value = self.activation(project(self.v_proj, normed))  # (B, L, V)
        ema_out, ema_state, ema_window = self.ema_gate(
            normed,
            key_mask=key_mask,
            state=state.ema if state is not None else None,
            window=state.ema_window if state is not None else None,
            return_state=update_state,
        )
        base = project(self.mx_proj, self.dropout(ema_out.contiguous()))  # the no-grad EMA output may be channel-major
        update_gate, reset_gate, hx, query, key = self._gates(base, in_place=False)
        value = self.hidden_dropout(value)

        attended, weights, new_state = self._attend(
            query, key, value, key_mask, causal=causal, state=state, update_state=update_state, need_weights=need_weights
        )
        gated = self.activation(hx + project(self.h_proj, attended * reset_gate))
        out = torch.addcmul(residual, update_gate, self.dropout(gated) - residual)
        if not self.prenorm:
            out = self.norm(out)
        if new_state is not None:
            new_state.ema, new_state.ema_window = ema_state, ema_window
        return AttentionResult(hidden=out, weights=weights, state=new_state)

    def _token_local(self) -> bool:
        """Whether the layer may run in sequence groups and row blocks (see ``blocks_are_exact``)."""
        return blocks_are_exact(
            training=self.training,
            is_batch_norm=self.norm.is_batch_norm,
            dropout_probabilities=(self.dropout.probability, self.hidden_dropout.probability, self.attention_dropout_p),
        )

    def _forward_blocked(self, x: Tensor, *, key_mask: Tensor | None, causal: bool, overwrite_input: bool = False) -> Tensor:
        """The whole-sequence forward, block by block after the EMA (see :mod:`.kernels.row_blocks`).

        The norm and the EMA run over the whole sequence (the EMA crosses chunks); projections,
        gates, attention and the residual then run per block of whole attention frames, so no
        (B, L, V)-sized intermediate is ever allocated. Same arithmetic as the general path.
        """
        x = x.contiguous()
        batch, length, _ = x.shape
        recording = records_grad(itertools.chain((x,), self.parameters()))
        out = None
        if not recording:
            # a group reads its rows of x (norm, EMA) before its blocks write them, and each block
            # reads its residual rows before its last op writes the same rows
            out = x if overwrite_input and self.prenorm else torch.empty_like(x)
        group = max(1, SEQUENCE_GROUP_ROWS // max(1, length))
        pieces: list[Tensor] = []
        # Groups of whole sequences: the norm and the EMA are exact per sequence, and their
        # (g, L, D) tensors stay small enough for the allocator to reuse.
        for first in range(0, batch, group):
            sequences = slice(first, min(first + group, batch))
            piece = self._sequence_group(
                x[sequences],
                key_mask=None if key_mask is None else key_mask[sequences].contiguous(),
                causal=causal,
                out=None if out is None else out[sequences],
            )
            if out is None:  # with an output, each group has written its rows into it
                pieces.append(piece)
        if out is not None:
            return out
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)

    def _sequence_group(self, x: Tensor, *, key_mask: Tensor | None, causal: bool, out: Tensor | None) -> Tensor:
        """The blocked forward of (g, L, D) whole sequences; written into ``out`` when given (no grad)."""
        batch, length, _ = x.shape
        normed = self.norm(x) if self.prenorm else x
        in_place = out is not None and self.prenorm
        # Given a channel-major input, the chunked-scan EMA needs no transposing copy of its own
        # and returns a channel-major output. The in-place blocks then mix it with their rows of
        # the normed input themselves (``ema_gate.mix``): the transposing read happens block by
        # block, in cache, instead of over the whole (g, L, D) tensor.
        ema_out, _, _ = self.ema_gate(
            to_channel_major(normed) if in_place else normed, key_mask=key_mask, mix=not in_place
        )  # (g, L, D)
        normed = normed.contiguous()
        if not (in_place and is_channel_major(ema_out)):
            ema_out = ema_out.contiguous()
        blocks = plan_row_blocks(batch, length, chunk=self.chunk_size, target_rows=self.block_rows or BLOCK_ROWS)
        results: list[Tensor] = []
        parts = zip(
            split_rows(x, blocks),
            split_rows(normed, blocks),
            split_rows(ema_out, blocks),
            split_rows(key_mask, blocks) if key_mask is not None else [None] * len(blocks),
        )
        for block, (x_part, normed_part, ema_part, mask_part) in zip(blocks, parts):
            # a sequence's short last chunk is padded to a whole chunk, as over the whole tensor
            whole_chunks = block.sequence is not None
            if in_place:
                # no grad: the block's last op writes straight into the output (no copy)
                self._block_in_place(
                    x_part, normed_part, ema_part, mask_part, causal=causal, whole_chunks=whole_chunks, out=block.take(out)
                )
                continue
            result = self._block(x_part, normed_part, ema_part, mask_part, causal=causal, whole_chunks=whole_chunks)
            if out is None:
                results.append(result)
            else:
                block.put(out, result)
        return assemble(blocks, results, batch=batch, length=length) if out is None else out

    def _block(
        self,
        residual: Tensor,
        normed: Tensor,
        ema_out: Tensor,
        key_mask: Tensor | None,
        *,
        causal: bool,
        whole_chunks: bool,
    ) -> Tensor:
        """One block, (n, f, D) views of whole frames: the general path without state or dropout."""
        value = self.activation(project(self.v_proj, normed))  # (n, f, V)
        base = project(self.mx_proj, ema_out)  # (n, f, 2D + Z + V)
        update_gate, reset_gate, hx, query, key = self._gates(base, in_place=False)
        attended = self._attend_block(query, key, value, key_mask, causal=causal, whole_chunks=whole_chunks)
        gated = self.activation(hx + project(self.h_proj, attended * reset_gate))
        out = torch.addcmul(residual, update_gate, gated - residual)
        return out if self.prenorm else self.norm(out)

    def _block_in_place(
        self,
        residual: Tensor,
        normed: Tensor,
        ema_out: Tensor,
        key_mask: Tensor | None,
        *,
        causal: bool,
        whole_chunks: bool,
        out: Tensor,
    ) -> None:
        """:meth:`_block` without autograd, written into ``out`` (n, f, D), pre-norm only.

        Same arithmetic, in the same order, with fewer buffers: the gates and activations are
        computed in place in the projection outputs, and the last op writes into ``out``.
        """
        activation = self.activation_in_place
        value = activation(project(self.v_proj, normed))  # (n, f, V), a fresh tensor
        # ema_out is the EMA before its mix, possibly a transposed (channel-major) view
        mixed = self.ema_gate.mix(ema_out, normed)  # (n, f, D), a fresh tensor laid out as normed
        base = project(self.mx_proj, mixed)  # (n, f, 2D + Z + V), a fresh tensor
        update_gate, reset_gate, hx, query, key = self._gates(base, in_place=True)
        attended = self._attend_block(query, key, value, key_mask, causal=causal, whole_chunks=whole_chunks)
        # hx + h_proj(a) in the general path's order (the fused addmm_ accumulator rounded
        # differently: 1.2e-5 on logits of stepwise decoding against the full forward)
        gated = project(self.h_proj, attended * reset_gate).add_(hx)  # (n, f, D), a fresh tensor
        gated = activation(gated)
        torch.addcmul(residual, update_gate, gated.sub_(residual), out=out)

    def _gates(self, base: Tensor, *, in_place: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Split ``mx_proj``'s output (..., 2D + Z + V) into the gates, ``hx``, query and key.

        Returns the update gate (..., D), the reset gate (..., V), ``hx`` (..., D), the query
        and the key (..., Z). ``in_place`` (no autograd) computes the gates inside ``base``.
        """
        update_gate, shared_and_reset, hx = torch.split(
            base, [self.hidden_size, self.shared_size + self.value_size, self.hidden_size], dim=-1
        )
        update_gate = update_gate.sigmoid_() if in_place else torch.sigmoid(update_gate)
        shared, reset_gate = torch.split(
            F.silu(shared_and_reset, inplace=in_place), [self.shared_size, self.value_size], dim=-1
        )
        query = torch.addcmul(self.qk_bias[0], shared, self.qk_weight[0])
        key = torch.addcmul(self.qk_bias[1], shared, self.qk_weight[1])
        return update_gate, reset_gate, hx, query, key

    def _attend_block(
        self, query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None, *, causal: bool, whole_chunks: bool
    ) -> Tensor:
        """:meth:`_attend` of one row block: no state, no weights."""
        attended, _, _ = self._attend(
            query,
            key,
            value,
            key_mask,
            causal=causal,
            state=None,
            update_state=False,
            need_weights=False,
            whole_chunks=whole_chunks,
        )
        return attended

    def _attend(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_mask: Tensor | None,
        *,
        causal: bool,
        state: LayerState | None,
        update_state: bool,
        need_weights: bool,
        whole_chunks: bool = False,
    ) -> tuple[Tensor, Tensor | None, LayerState | None]:
        """``whole_chunks``: pad a frame shorter than the chunk to a whole chunk (a row block
        that ends a longer sequence), as the chunked path over the whole sequence does."""
        batch, length, _ = query.shape
        cached = state.cached_length if state is not None else 0
        if cached:
            key = torch.cat([state.keys, key], dim=1)
            value = torch.cat([state.values, value], dim=1)
            key_mask = merge_key_masks(
                state.key_mask, key_mask, cached, length, batch=batch, device=query.device
            )
        frame = cached + length  # the key frame starts at a chunk boundary (or at position 0)
        chunk = self.chunk_size
        if chunk is None or (frame <= chunk and not (whole_chunks and frame < chunk)):
            bias = self.rel_pos_bias(length, frame, cached)
            out, weights = self._kernel(
                query.unsqueeze(1),
                key.unsqueeze(1),
                value.unsqueeze(1),
                bias,
                None if key_mask is None else key_mask.unsqueeze(1),
                causal=causal,
                query_offset=cached,
                need_weights=need_weights,
            )
            attended = out.squeeze(1)
        else:
            chunks = -(-frame // chunk)
            padded = chunks * chunk
            # Queries occupy frame positions cached..frame-1; earlier rows are computed and dropped.
            query_frame = F.pad(query, (0, 0, cached, padded - frame))
            key_frame = F.pad(key, (0, 0, 0, padded - frame))
            value_frame = F.pad(value, (0, 0, 0, padded - frame))
            if padded != frame or key_mask is not None:
                if key_mask is None:
                    key_mask = torch.ones(batch, frame, dtype=torch.bool, device=query.device)
                key_mask = F.pad(key_mask, (0, padded - frame), value=False)
            bias = self.rel_pos_bias(chunk, chunk, 0)
            out, weights = self._kernel(
                query_frame.view(batch, chunks, chunk, -1),
                key_frame.view(batch, chunks, chunk, -1),
                value_frame.view(batch, chunks, chunk, -1),
                bias,
                None if key_mask is None else key_mask.view(batch, chunks, chunk),
                causal=causal,
                query_offset=0,
                need_weights=need_weights,
            )
            attended = out.reshape(batch, padded, -1)[:, cached:frame]
            key_mask = None if key_mask is None else key_mask[:, :frame]

        new_state = None
        if update_state:
            keep = frame if chunk is None else frame % chunk
            start = frame - keep
            new_state = LayerState(
                keys=key[:, start:],
                values=value[:, start:],
                key_mask=None if key_mask is None else key_mask[:, start:],
            )
        return attended, weights, new_state

    def _kernel(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        bias: Tensor,
        key_mask: Tensor | None,
        *,
        causal: bool,
        query_offset: int,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        return dispatch_attention(
            query,
            key,
            value,
            bias,
            key_mask,
            kernel_name=self.kernel_name,
            activation=self.attention_activation,
            causal=causal,
            query_offset=query_offset,
            scale=self.scale,
            dropout_p=self.attention_dropout_p if self.training else 0.0,
            training=self.training,
            need_weights=need_weights,
        )
