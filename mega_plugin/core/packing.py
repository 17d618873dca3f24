"""Packed (padding-free) batches: several documents in one row, run as one padded row each.

Neither MEGA's EMA nor its attention may cross a document boundary, so a packed batch is
unpacked into one row per document (padded to the longest, with a key mask), run as a
padded batch, and packed back. The HF adapter finds the documents from ``position_ids``
that restart at 0 (transformers' flattening collators); the fairseq2 adapter from its
``BatchLayout`` (begin offsets and lengths). Both use :func:`document_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DocumentRows:
    """Where each document's tokens sit in the flat token sequence."""

    index: Tensor
    """(N, W) flat token index of each document position (clamped where not valid)."""

    valid: Tensor
    """(N, W) bool: True at real tokens, False at the padding that fills a row to W."""

    def unpack(self, flat: Tensor) -> Tensor:
        """(T, ...) -> (N, W, ...): one row per document."""
        return flat[self.index]

    def pack(self, rows: Tensor, total: int) -> Tensor:
        """(N, W, ...) -> (T, ...): the real positions back at their flat index."""
        packed = rows.new_zeros(total, *rows.shape[2:])
        return packed.index_put((self.index[self.valid],), rows[self.valid])


def document_rows(begins: Tensor, lengths: Tensor, *, total: int, width: int | None = None) -> DocumentRows:
    """Rows for documents starting at flat offsets ``begins`` (N,) with ``lengths`` (N,)."""
    width = int(lengths.max()) if width is None else width
    offsets = torch.arange(width, device=begins.device)  # (W,)
    valid = offsets < lengths[:, None]  # (N, W)
    index = (begins[:, None] + offsets).clamp(max=max(total - 1, 0))  # (N, W)
    return DocumentRows(index=index, valid=valid)


def restarts(position_ids: Tensor) -> Tensor:
    """(B, L) -> (B, L) bool: True where a document starts (position 0, or a row's first token)."""
    starts = position_ids == 0
    starts[:, 0] = True
    return starts


def is_packed(position_ids: Tensor, attention_mask: Tensor | None = None) -> bool:
    """True if some row restarts its positions at 0 after a real token.

    With a 0/1 ``attention_mask`` (B, L) only restarts between two real tokens count: a
    left-padded row's first real token has position 0 too.
    """
    if position_ids.dim() != 2 or position_ids.shape[-1] < 2:
        return False
    restart = position_ids[:, 1:] == 0  # (B, L - 1)
    if attention_mask is not None and attention_mask.shape == position_ids.shape:
        real = attention_mask.to(torch.bool)
        restart = restart & real[:, 1:] & real[:, :-1]
    return bool(restart.any())


def rows_from_position_ids(position_ids: Tensor) -> DocumentRows:
    """The documents of a (B, L) packed batch, flattened row-major to T = B * L tokens."""
    starts = restarts(position_ids).reshape(-1)  # (T,)
    total = starts.numel()
    begins = torch.nonzero(starts).reshape(-1)  # (N,)
    ends = torch.cat([begins[1:], begins.new_tensor([total])])
    return document_rows(begins, ends - begins, total=total)
