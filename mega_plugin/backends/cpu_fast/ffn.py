"""The NFFN in row blocks: token by token, so long inputs never allocate a (B, L, F) intermediate."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from ...core.ffn import NormalizedFeedForward
from ...core.memo import records_grad
from ...core.tracing import capturing_graph
from .in_place import activation_in_place
from .linear import project_rows
from .ownership import may_overwrite
from .plan import runs_in_blocks
from .row_blocks import BLOCK_ROWS, assemble, plan_row_blocks, split_rows


class BlockedFeedForward(NormalizedFeedForward):
    """:class:`NormalizedFeedForward` run in row blocks where that gives the same result."""

    block_rows: int = BLOCK_ROWS
    """Target tokens per row block (a class default; set on an instance to change one layer)."""

    def forward(self, x: Tensor) -> Tensor:
        if capturing_graph():
            return super().forward(x)  # first: a shape test here would specialise an exported graph
        dropouts = (self.dropout.probability, self.hidden_dropout.probability)
        if x.dim() == 3 and x.shape[0] * x.shape[1] <= self.block_rows:
            # one block at most (a decoding step): the core's arithmetic, the few-row products
            # without module-call overhead where dropout is off
            if self.training and max(dropouts) > 0.0:
                return super().forward(x)
            hidden = self.norm(x) if self.prenorm else x
            out = project_rows(self.fc2, self.activation(project_rows(self.fc1, hidden))) + x
            return out if self.prenorm else self.norm(out)
        if not runs_in_blocks(self, x, dropouts=dropouts):
            return super().forward(x)
        overwrite = may_overwrite(x)
        x = x.contiguous()
        batch, length, _ = x.shape
        blocks = plan_row_blocks(batch, length, chunk=1, target_rows=self.block_rows)
        if len(blocks) <= 1:
            return super().forward(x)
        if records_grad(itertools.chain((x,), self.parameters())):
            results = [NormalizedFeedForward.forward(self, part) for part in split_rows(x, blocks)]
            return assemble(blocks, results, batch=batch, length=length)
        # each block reads its rows of x before writing the same rows of out
        out = x if overwrite and self.prenorm else torch.empty_like(x)
        activation = activation_in_place(self.activation_name)
        for block in blocks:  # each result is written out before the next block allocates
            rows = block.take(x)
            if not self.prenorm:
                block.put(out, super().forward(rows))
                continue
            hidden = activation(self.fc1(self.norm(rows)))  # (rows, 1, F), a fresh tensor
            # fc2(hidden) + x in the core's order (folding x into the GEMM accumulator rounds differently)
            torch.add(self.fc2(hidden), rows, out=block.take(out))
        return out
