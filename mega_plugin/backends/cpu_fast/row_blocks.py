"""Row blocks: (B, L, ...) activations cut into blocks of whole attention frames.

Why: on CPU every op over a whole (B, L, F) activation allocates tens of MiB that the C
allocator maps fresh from the kernel, and touching fresh pages costs more than the arithmetic
(measured: ``silu`` of a (32768, 512) tensor 21 ms out of place, 2 ms in place or in 32
blocks of 1024 rows). Running the token-local and chunk-local work of a layer block by block
keeps every intermediate a few MiB (reused by the allocator, hot in cache).

A block always holds whole attention frames (a chunk, or a whole unchunked sequence), so
attention inside a block sees exactly the keys it would see over the whole tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Iterable

import torch
from torch import Tensor

BLOCK_ROWS: Final = 1024
"""Target rows (tokens) per block: intermediates of ~20 KiB per row stay within the L3 cache."""

SEQUENCE_GROUP_ROWS: Final = 4096
"""Tokens per group of whole sequences for the whole-sequence ops (norm, EMA) of a layer:
(4096, 256) fp32 tensors are 4 MiB, which the allocator reuses; (B * L, D) ones are mapped fresh.
(8192 rows measured 12% slower at B 4, L 2048, chunk 256, alternating in one process; 2048 no faster.)"""


@dataclass(frozen=True)
class RowBlock:
    """One block: flat rows ``start:stop`` of the (B * L) tokens, or positions ``start:stop`` of one sequence."""

    start: int
    stop: int
    frame: int
    """Rows per attention frame in this block's view (a chunk or a whole sequence)."""

    sequence: int | None = None
    """The sequence this block lies in when blocks cannot span sequences (flat rows otherwise)."""

    def take(self, tensor: Tensor) -> Tensor:
        """The block of a contiguous (B, L, ...) tensor.

        Flat blocks come back as (frames, frame, ...) views; per-sequence blocks as (1, rows, ...).
        """
        if self.sequence is not None:
            return tensor[self.sequence : self.sequence + 1, self.start : self.stop]
        rest = tensor.shape[2:]
        flat = tensor.view(-1, *rest)[self.start : self.stop]
        return flat.view(-1, self.frame, *rest)

    def put(self, target: Tensor, block: Tensor) -> None:
        """Copy a block result back into a contiguous (B, L, ...) ``target`` (no autograd)."""
        self.take(target).copy_(block.view(self.take(target).shape))


def plan_row_blocks(batch: int, length: int, *, chunk: int | None, target_rows: int = BLOCK_ROWS) -> list[RowBlock]:
    """Blocks covering every token once, each of whole frames and about ``target_rows`` rows.

    ``chunk`` is the attention chunk (None: one frame per sequence). When the frame divides
    the length, blocks run over the flattened (B * L) rows and may span sequences; otherwise
    (a last, shorter chunk per sequence) they stay inside one sequence, and the short last
    chunk always shares a block with the chunk before it: over the whole tensor it is padded
    to a whole chunk of masked keys, and only a block of more than one chunk is attended that
    way (a block of the short chunk alone would be one unpadded frame, which differs where the
    chunk is all padding).
    """
    if batch <= 0 or length <= 0:
        return []
    frame = length if chunk is None or length <= chunk else chunk
    frames_per_block = max(1, target_rows // frame)
    step = frames_per_block * frame
    if length % frame == 0:
        total = batch * length
        return [RowBlock(start, min(start + step, total), frame) for start in range(0, total, step)]
    starts = list(range(0, length, step))
    if len(starts) > 1 and length - starts[-1] < frame:
        starts.pop()  # the short last chunk joins the block before it
    stops = starts[1:] + [length]
    return [
        RowBlock(start, stop, frame, sequence=sequence)
        for sequence in range(batch)
        for start, stop in zip(starts, stops)
    ]


def blocks_are_exact(*, training: bool, is_batch_norm: bool, dropout_probabilities: Iterable[float]) -> bool:
    """Whether a layer may run in row blocks (and sequence groups) with the same result.

    In eval always. In training not with a batch norm (its statistics span the whole batch,
    before or after the layer) nor with active dropout (feature dropout draws one mask per
    sequence, and blocks would draw in another order).
    """
    if not training:
        return True
    return not is_batch_norm and max(dropout_probabilities, default=0.0) == 0.0


def is_channel_major(tensor: Tensor) -> bool:
    """Whether a (B, L, F) tensor is laid out as a contiguous (F, B, L) one (and is not also (B, L, F))."""
    return tensor.dim() == 3 and not tensor.is_contiguous() and tensor.permute(2, 0, 1).is_contiguous()


def to_channel_major(tensor: Tensor) -> Tensor:
    """A (B, L, F) view of a contiguous (F, B, L) copy of ``tensor`` (one transposing copy)."""
    return tensor.permute(2, 0, 1).contiguous().permute(1, 2, 0)


def split_rows(tensor: Tensor, blocks: list[RowBlock]) -> list[Tensor]:
    """Every block of a contiguous (B, L, ...) tensor, as :meth:`RowBlock.take` gives it.

    A channel-major (B, L, F) tensor (see :func:`is_channel_major`) is cut the same way into
    transposed views, which ``torch.addmm`` reads without a copy.

    Made with ``torch.split`` so that autograd joins the blocks' gradients once; slicing each
    block on its own would make every block's backward allocate (and add) a whole-tensor gradient.
    """
    if not blocks:
        return []
    rest = tensor.shape[2:]
    if blocks[0].sequence is None and is_channel_major(tensor):
        # (B, L, F) laid out as (F, B, L): a block is a column range of the (F, B * L) matrix,
        # handed out transposed, (frames, frame, F) with strides (frame, 1, B * L).
        columns = tensor.permute(2, 0, 1).reshape(tensor.shape[2], -1)
        pieces = torch.split(columns, [block.stop - block.start for block in blocks], dim=1)
        return [piece.t().view(-1, block.frame, tensor.shape[2]) for piece, block in zip(pieces, blocks)]
    if blocks[0].sequence is None:
        flat = tensor.view(-1, *rest)
        pieces = torch.split(flat, [block.stop - block.start for block in blocks], dim=0)
        return [piece.view(-1, block.frame, *rest) for piece, block in zip(pieces, blocks)]
    sequences = torch.split(tensor, 1, dim=0)
    out: list[Tensor] = []
    for sequence, one in enumerate(sequences):
        mine = [block for block in blocks if block.sequence == sequence]
        out.extend(torch.split(one, [block.stop - block.start for block in mine], dim=1))
    return out


def assemble(blocks: list[RowBlock], results: list[Tensor], *, batch: int, length: int) -> Tensor:
    """(B, L, F) from per-block results, keeping autograd (one concatenation)."""
    if blocks and blocks[0].sequence is None:
        features = results[0].shape[-1]
        return torch.cat([r.reshape(-1, features) for r in results], dim=0).view(batch, length, features)
    per_sequence: list[list[Tensor]] = [[] for _ in range(batch)]
    for block, result in zip(blocks, results):
        assert block.sequence is not None
        per_sequence[block.sequence].append(result)
    return torch.cat([torch.cat(parts, dim=1) for parts in per_sequence], dim=0)
