"""The normalized feed-forward network (``nffn``) of a MEGA block."""

from __future__ import annotations

import itertools
import torch
from torch import Tensor, nn

from .activations import get_activation, get_activation_in_place
from .config import MegaCoreConfig
from .dense import project
from .dropout import MegaDropout
from .kernels.recording import records_grad
from .kernels.row_blocks import BLOCK_ROWS, assemble, blocks_are_exact, plan_row_blocks, split_rows
from .norms import SequenceNorm


class NormalizedFeedForward(nn.Module):
    """``x + dropout(fc2(dropout(act(fc1(norm(x))))))``, pre- or post-norm."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        self.prenorm = config.normalize_before_ffn
        self.activation = get_activation(config.activation)
        self.activation_in_place = get_activation_in_place(config.activation)
        self.dropout = MegaDropout(config.dropout_prob, featurewise=config.use_feature_dropout)
        self.hidden_dropout = MegaDropout(config.nffn_activation_dropout_prob, featurewise=config.use_feature_dropout)
        self.norm = SequenceNorm(
            config.normalization_type, config.hidden_size, eps=config.norm_eps, affine=config.norm_affine
        )
        self.fc1 = nn.Linear(config.hidden_size, config.nffn_hidden_size)
        self.fc2 = nn.Linear(config.nffn_hidden_size, config.hidden_size)
        self.block_rows: int | None = BLOCK_ROWS
        """Tokens per row block; None runs every op over the whole tensor."""

    def forward(self, x: Tensor, *, overwrite_input: bool = False) -> Tensor:
        """``x`` (B, L, D); token by token, so long inputs run in row blocks (see ``kernels.row_blocks``).

        ``overwrite_input``: the caller hands ``x`` over (nobody reads it afterwards), so a
        no-grad pre-norm call may write its result into ``x`` block by block instead of into a
        fresh (B, L, D) tensor (whose first touch costs ~8 ms of page faults per 32 MiB on CPU).
        Calls that record gradients ignore it.
        """
        if x.dim() != 3 or not self.block_rows or not self._token_local():
            return self._forward(x)
        x = x.contiguous()
        batch, length, _ = x.shape
        blocks = plan_row_blocks(batch, length, chunk=1, target_rows=self.block_rows)
        if len(blocks) <= 1:
            return self._forward(x)
        recording = records_grad(itertools.chain((x,), self.parameters()))
        if recording:
            results = [self._forward(part) for part in split_rows(x, blocks)]
            return assemble(blocks, results, batch=batch, length=length)
        # each block reads its rows of x before writing the same rows of out
        out = x if overwrite_input and self.prenorm else torch.empty_like(x)
        for block in blocks:  # each result is written out before the next block allocates
            if self.prenorm:
                self._forward_in_place(block.take(x), out=block.take(out))
            else:
                block.put(out, self._forward(block.take(x)))
        return out

    def _token_local(self) -> bool:
        """Whether the NFFN may run in row blocks (see ``blocks_are_exact``)."""
        return blocks_are_exact(
            training=self.training,
            is_batch_norm=self.norm.is_batch_norm,
            dropout_probabilities=(self.dropout.probability, self.hidden_dropout.probability),
        )

    def _forward_in_place(self, x: Tensor, *, out: Tensor) -> None:
        """Pre-norm :meth:`_forward` without autograd or dropout, written into ``out`` (rows, 1, D).

        The residual add writes ``out`` directly: no block copy, no fresh block result.
        """
        hidden = self.activation_in_place(project(self.fc1, self.norm(x)))  # (rows, 1, F), a fresh tensor
        # fc2(hidden) + x in the general path's order (folding x into fc2's GEMM accumulator
        # rounded differently: 1.2e-5 on logits of stepwise decoding against the full forward)
        torch.add(project(self.fc2, hidden), x, out=out)

    def _forward(self, x: Tensor) -> Tensor:
        residual = x
        hidden = self.norm(x) if self.prenorm else x
        hidden = self.hidden_dropout(self.activation(project(self.fc1, hidden)))
        out = self.dropout(project(self.fc2, hidden)) + residual
        return out if self.prenorm else self.norm(out)
