"""The gated-attention layer in row blocks: the CPU inference (and no-dropout training) path.

The norm and the EMA run over whole sequences (the EMA crosses chunks); everything after the
EMA runs per row block of whole attention frames (:mod:`.row_blocks`), so no (B, L, V)-sized
intermediate is ever allocated and every temporary stays in cache. With gradients each block
is the core's own :meth:`~mega_plugin.core.gated_attention.MovingAverageGatedAttention.gated_attention`;
without, a block computes the same arithmetic in place in its projection outputs and writes its
result straight into the layer output, which may be the layer's own input (:mod:`.ownership`).
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core.chunking import attend_in_chunks
from ...core.gated_attention import AttentionResult, MovingAverageGatedAttention
from ...core.memo import records_grad
from .decode_step import decode_step, serves_step
from .in_place import activation_in_place
from .ownership import may_overwrite
from .plan import runs_in_blocks
from .row_blocks import (
    BLOCK_ROWS,
    SEQUENCE_GROUP_ROWS,
    assemble,
    is_channel_major,
    plan_row_blocks,
    split_rows,
    to_channel_major,
)


class BlockedGatedAttention(MovingAverageGatedAttention):
    """:class:`MovingAverageGatedAttention` run in row blocks where that gives the same result."""

    block_rows: int = BLOCK_ROWS
    """Target tokens per row block (a class default; set on an instance to change one layer)."""

    def forward(self, x: Tensor, **options: Any) -> AttentionResult:
        """The core's ``forward`` (same options); one decoding step by :func:`.decode_step.decode_step`
        when it serves the call; in row blocks when no state, no weights are asked for and
        :func:`.plan.runs_in_blocks` says the blocks give the same result."""
        state = options.get("state")
        if state is not None and serves_step(
            self,
            x,
            state=state,
            key_mask=options.get("key_mask"),
            causal=bool(options.get("causal")),
            need_weights=bool(options.get("need_weights")),
            dropouts=self._dropouts(),
        ):
            return decode_step(self, x, state=state, update_state=bool(options.get("update_state")))
        streams = options.get("state") is not None or options.get("update_state") or options.get("need_weights")
        if streams or not runs_in_blocks(self, x, dropouts=self._dropouts()):
            return super().forward(x, **options)
        hidden = self._forward_blocked(x, key_mask=options.get("key_mask"), causal=bool(options.get("causal")))
        return AttentionResult(hidden=hidden, weights=None, state=None)

    def _dropouts(self) -> tuple[float, ...]:
        return (self.dropout.probability, self.hidden_dropout.probability, self.attention_dropout_p)

    def _forward_blocked(self, x: Tensor, *, key_mask: Tensor | None, causal: bool) -> Tensor:
        """Groups of whole sequences (norm and EMA are exact per sequence, and their (g, L, D)
        tensors stay small enough for the allocator to reuse), each in row blocks."""
        overwrite = may_overwrite(x)
        x = x.contiguous()
        batch, length, _ = x.shape
        out = None
        if not records_grad(itertools.chain((x,), self.parameters())):
            # a group reads its rows of x (norm, EMA) before its blocks write them, and each
            # block reads its residual rows before its last op writes the same rows
            out = x if overwrite and self.prenorm else torch.empty_like(x)
        group = max(1, SEQUENCE_GROUP_ROWS // max(1, length))
        # torch.split, not x[rows] per group: autograd then joins the groups' gradients in one
        # concatenation, where each slice's backward would zero-fill and copy a whole (B, L, D)
        # gradient (at B 4, L 8192: 16 x 32 MiB per training step)
        groups = torch.split(x, group, dim=0)
        masks = [None] * len(groups) if key_mask is None else [part.contiguous() for part in key_mask.split(group, dim=0)]
        if out is not None:
            for part, mask, target in zip(groups, masks, out.split(group, dim=0)):
                self._group_in_place(part, key_mask=mask, causal=causal, out=target)
            return out
        pieces = [self._group_with_grad(part, key_mask=mask, causal=causal) for part, mask in zip(groups, masks)]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)

    def _group_with_grad(self, x: Tensor, *, key_mask: Tensor | None, causal: bool) -> Tensor:
        """(g, L, D) sequences; each block is the core's ``gated_attention`` (autograd joins them)."""
        batch, length, _ = x.shape
        normed = self.norm(x) if self.prenorm else x
        ema, _, _ = self.ema_gate(normed, key_mask=key_mask)
        blocks = plan_row_blocks(batch, length, chunk=self.chunk_size, target_rows=self.block_rows)
        masks = split_rows(key_mask, blocks) if key_mask is not None else [None] * len(blocks)
        results = [
            self.gated_attention(residual, normed_part, ema_part, key_mask=mask, causal=causal).hidden
            for residual, normed_part, ema_part, mask in zip(
                split_rows(x, blocks), split_rows(normed.contiguous(), blocks), split_rows(ema.contiguous(), blocks), masks
            )
        ]
        return assemble(blocks, results, batch=batch, length=length)

    def _group_in_place(self, x: Tensor, *, key_mask: Tensor | None, causal: bool, out: Tensor) -> None:
        """(g, L, D) sequences without autograd, each block written into ``out``."""
        batch, length, _ = x.shape
        normed = self.norm(x) if self.prenorm else x
        # The EMA of a channel-major input comes back channel-major from the chunked scan; each
        # block then mixes its own rows of it with the normed input, so the transposing read
        # happens block by block, in cache, instead of over the whole (g, L, D) tensor.
        signal = normed if key_mask is None else normed.masked_fill(~key_mask.unsqueeze(-1), 0.0)
        ema, _ = self.ema_gate.run(to_channel_major(signal))
        ema = ema.to(normed.dtype)  # fp32 from the kernel; keeps the channel-major layout
        if not is_channel_major(ema):
            ema = ema.contiguous()
        normed = normed.contiguous()
        blocks = plan_row_blocks(batch, length, chunk=self.chunk_size, target_rows=self.block_rows)
        masks = split_rows(key_mask, blocks) if key_mask is not None else [None] * len(blocks)
        parts = zip(blocks, split_rows(x, blocks), split_rows(normed, blocks), split_rows(ema, blocks), masks)
        for block, residual, normed_part, ema_part, mask in parts:
            result = self._block_in_place(residual, normed_part, ema_part, mask, causal=causal, out=block.take(out))
            if result is not None:
                block.put(out, result)

    def _block_in_place(
        self, residual: Tensor, normed: Tensor, ema: Tensor, key_mask: Tensor | None, *, causal: bool, out: Tensor
    ) -> Tensor | None:
        """One block of (n, f, D) views without autograd; pre-norm writes into ``out``, post-norm returns.

        The core's arithmetic in the same order, with fewer buffers: the gates and activations are
        computed inside the projection outputs, each a fresh tensor this block owns.
        """
        activation = activation_in_place(self.activation_name)
        value = activation(self.v_proj(normed))  # (n, f, V)
        mixed = torch.empty(normed.shape, dtype=torch.result_type(ema, normed), device=normed.device)
        torch.addcmul(ema, normed, self.ema_gate.residual_weight, out=mixed)  # EMA(x) + residual_weight * x
        base = self.mx_proj(F.silu(mixed, inplace=True))  # (n, f, 2D + Z + V)
        update, shared_and_reset, hx = torch.split(
            base, [self.hidden_size, self.shared_size + self.value_size, self.hidden_size], dim=-1
        )
        shared, reset = torch.split(F.silu(shared_and_reset, inplace=True), [self.shared_size, self.value_size], dim=-1)
        query = torch.addcmul(self.qk_bias[0], shared, self.qk_weight[0])
        key = torch.addcmul(self.qk_bias[1], shared, self.qk_weight[1])
        attended, _, _ = attend_in_chunks(
            query,
            key,
            value,
            key_mask,
            chunk=self.chunk_size,
            bias=self.rel_pos_bias,
            attend=partial(self.attend_frames, causal=causal, need_weights=False),
        )
        # hx + h_proj(a) in the core's order (fusing hx into the GEMM accumulator rounds differently)
        hidden = activation(self.h_proj(attended * reset).add_(hx)).sub_(residual)  # (n, f, D)
        if not self.prenorm:
            return self.norm(torch.addcmul(residual, update.sigmoid_(), hidden))
        torch.addcmul(residual, update.sigmoid_(), hidden, out=out)
        return None
