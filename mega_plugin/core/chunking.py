"""Mega-chunk: attention restricted to chunks of ``chunk_size`` tokens, with streaming state.

The EMA runs over the whole sequence and carries context across chunks; attention only looks
inside a chunk. A sequence whose length is not a multiple of the chunk is padded with masked
keys (the reference requires a multiple). Without chunking the whole sequence is one frame.

When streaming, the keys and values of the current chunk's earlier tokens come from the layer
state and are kept until the chunk fills; the frame then starts over at the next boundary.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .state import LayerState, merge_key_masks


class FrameAttention(Protocol):
    """Attention over frames: ``(query (B, C, Lq, Z), key, value (B, C, Lk, .), bias (Lq, Lk),
    key_mask (B, C, Lk) | None, query_offset) -> (output (B, C, Lq, V), weights | None)``."""

    def __call__(
        self, query: Tensor, key: Tensor, value: Tensor, bias: Tensor, key_mask: Tensor | None, query_offset: int
    ) -> tuple[Tensor, Tensor | None]: ...


def attend_in_chunks(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_mask: Tensor | None,
    *,
    chunk: int | None,
    bias: Callable[[int, int, int], Tensor],
    attend: FrameAttention,
    state: LayerState | None = None,
    update_state: bool = False,
) -> tuple[Tensor, Tensor | None, LayerState | None]:
    """Attention of new queries (B, L, Z) over keys (B, L, Z) / values (B, L, V), chunk by chunk.

    ``key_mask`` (B, L) marks real tokens; ``bias(Lq, Lk, query_offset)`` gives the relative
    bias of a frame; ``state`` holds the current chunk's earlier keys and values. Returns the
    attended values (B, L, V), the weights of the frames when ``attend`` gives them, and (when
    ``update_state``) the state for the next call.
    """
    batch, length, _ = query.shape
    cached = state.cached_length if state is not None else 0
    if state is not None and cached:
        key = torch.cat([state.keys, key], dim=1)
        value = torch.cat([state.values, value], dim=1)
        key_mask = merge_key_masks(state.key_mask, key_mask, cached, length, batch=batch, device=query.device)
    frame = cached + length  # keys since the last chunk boundary (or since position 0)

    if chunk is None or frame <= chunk:
        # one frame: queries sit at positions cached .. frame - 1 of it
        out, weights = attend(
            query.unsqueeze(1),
            key.unsqueeze(1),
            value.unsqueeze(1),
            bias(length, frame, cached),
            None if key_mask is None else key_mask.unsqueeze(1),
            cached,
        )
        attended = out.squeeze(1)
    else:
        chunks = -(-frame // chunk)
        padding = chunks * chunk - frame
        # queries are placed at their frame positions; the rows before them are computed and dropped.
        # (B, frames, C, Z|V), the last size spelled out: -1 is ambiguous for an empty batch
        query_frames = F.pad(query, (0, 0, cached, padding)).view(batch, chunks, chunk, query.shape[-1])
        key_frames = F.pad(key, (0, 0, 0, padding)).view(batch, chunks, chunk, key.shape[-1])
        value_frames = F.pad(value, (0, 0, 0, padding)).view(batch, chunks, chunk, value.shape[-1])
        frame_mask = None
        if padding or key_mask is not None:
            real = key_mask if key_mask is not None else torch.ones(batch, frame, dtype=torch.bool, device=query.device)
            frame_mask = F.pad(real, (0, padding), value=False).view(batch, chunks, chunk)
        out, weights = attend(query_frames, key_frames, value_frames, bias(chunk, chunk, 0), frame_mask, 0)
        attended = out.reshape(batch, chunks * chunk, out.shape[-1])[:, cached:frame]

    new_state = None
    if update_state:
        start = 0 if chunk is None else frame - frame % chunk  # the current chunk's first key
        new_state = LayerState(
            keys=key[:, start:],
            values=value[:, start:],
            key_mask=None if key_mask is None else key_mask[:, start:],
        )
    return attended, weights, new_state
