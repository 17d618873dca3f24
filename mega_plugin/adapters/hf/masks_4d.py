"""4-D attention masks (B, 1, L, L): the block-diagonal ones packed batches use, as documents.

transformers lets callers pass a full token-to-token mask instead of the (B, L) padding mask;
padding-free collators and custom packing build block-diagonal ones (each document sees only
itself, causally for a decoder). MEGA's EMA runs along the whole sequence, so no mask can be
applied to it pair by pair: a block-diagonal mask is honoured exactly by running each block as
its own document (the core's packed path, the same as ``position_ids`` restarting at 0), and
any other mask is refused with a message rather than silently approximated.
"""

from __future__ import annotations

import torch
from torch import Tensor


def may_attend(mask: Tensor) -> Tensor:
    """(B, 1, L, L) bool, True where a query may see a key: bool and 0/1 masks as they are,
    additive float masks (0 to attend, large negative to mask) by their zeros."""
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() and bool((mask < 0).any()):
        return mask == 0
    return mask != 0


def documents_from_4d_mask(mask: Tensor, *, length: int, causal: bool) -> Tensor:
    """``position_ids`` (B, L) restarting at each document of a block-diagonal 4-D ``mask``.

    Raises ``ValueError`` naming what is wrong for any other shape or pattern.
    """
    batch = mask.shape[0]
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (length, length):
        raise ValueError(
            f"a 4-D attention_mask must have shape (batch, 1, {length}, {length}) for {length} new tokens "
            f"without a cache, got {tuple(mask.shape)}"
        )
    attend = may_attend(mask)[:, 0]  # (B, L, L)
    index = torch.arange(length, device=mask.device)
    starts = torch.ones(batch, length, dtype=torch.bool, device=mask.device)
    starts[:, 1:] = ~attend[:, index[1:], index[1:] - 1]  # a token that cannot see its predecessor begins a document
    document = starts.cumsum(dim=1)  # (B, L): 1, 1, 2, 2, 2, ...
    expected = document[:, :, None] == document[:, None, :]
    if causal:
        expected &= index[None, :, None] >= index[None, None, :]
    if not torch.equal(attend, expected):
        shape = "causal inside each document" if causal else "every token of a document seeing the whole document"
        raise ValueError(
            "a 4-D attention_mask must be block-diagonal (documents packed one after another, "
            f"{shape}, no padding): MEGA's moving average runs along the whole sequence and cannot "
            "honour other token-to-token masks; pass a (batch, length) padding mask, or position_ids "
            "restarting at 0 for packed documents"
        )
    first = torch.where(starts, index.expand(batch, length), torch.zeros_like(index).expand(batch, length))
    return index - first.cummax(dim=1).values  # (B, L): 0, 1, 0, 1, 2, ...
