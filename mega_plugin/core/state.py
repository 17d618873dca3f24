"""Streaming (incremental decoding) state of a causal MEGA stack.

Per layer: the EMA state (B, D, N) -- or, for a truncated EMA, the last ``truncation - 1``
inputs -- plus the keys, values and key mask of the *current chunk* only (of the whole
prefix when not chunking). With chunking the self-attention state therefore stops growing
with context.

A decoder with cross-attention also keeps, per layer, the encoder keys and values its
``cross_attn`` projected on the first call (fixed size: the encoder length S). They are
computed once per encoder pass and reordered with the rest of the state in beam search.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Final

import torch
from torch import Tensor


@dataclass
class LayerState:
    """What one causal MEGA layer remembers between calls."""

    ema: Tensor | None = None
    """(B, D, N) recurrent EMA state (untruncated EMA)."""

    ema_window: Tensor | None = None
    """(B, W, D) last EMA inputs, W <= truncation - 1 (truncated EMA)."""

    keys: Tensor | None = None
    """(B, T, Z) keys of the current chunk (or of the whole prefix without chunking)."""

    values: Tensor | None = None
    """(B, T, V) values matching ``keys``."""

    key_mask: Tensor | None = None
    """(B, T) bool, True for real tokens; None when every cached token is real."""

    cross_keys: Tensor | None = None
    """(B, S, Z) encoder keys of the cross-attention (decoders with cross-attention)."""

    cross_values: Tensor | None = None
    """(B, S, D) encoder values matching ``cross_keys``."""

    cross_key_mask: Tensor | None = None
    """(B, S) bool, True for real encoder tokens; None when every encoder token is real."""

    def tensors(self) -> list[Tensor]:
        return [value for value in (getattr(self, f.name) for f in fields(self)) if value is not None]

    def index_select(self, order: Tensor) -> "LayerState":
        """Reorder (or repeat) the batch, e.g. for beam search."""
        return LayerState(
            **{
                f.name: (value.index_select(0, order.to(value.device)) if value is not None else None)
                for f in fields(self)
                for value in (getattr(self, f.name),)
            }
        )

    @property
    def batch_size(self) -> int | None:
        """The batch of the held tensors, None when nothing is held yet."""
        held = self.tensors()
        return held[0].shape[0] if held else None

    @property
    def cached_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[1]

    @property
    def has_cross(self) -> bool:
        """True once the encoder keys and values are cached."""
        return self.cross_keys is not None


@dataclass
class MegaState:
    """Streaming state of a whole stack: one :class:`LayerState` per layer and the position."""

    layers: list[LayerState] = field(default_factory=list)
    position: int = 0
    """Number of tokens consumed so far (absolute position of the next token)."""

    @classmethod
    def empty(cls, num_layers: int) -> "MegaState":
        return cls(layers=[LayerState() for _ in range(num_layers)], position=0)

    def reorder(self, order: Tensor) -> None:
        """Reorder the batch in place (beam search ``beam_idx``)."""
        self.layers = [layer.index_select(order) for layer in self.layers]

    def size_bytes(self) -> int:
        """Bytes held by the state's tensors."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.tensors())

    @property
    def batch_size(self) -> int | None:
        for layer in self.layers:
            if layer.batch_size is not None:
                return layer.batch_size
        return None

    def clone(self) -> "MegaState":
        return MegaState(
            layers=[LayerState(**{f.name: getattr(layer, f.name) for f in fields(layer)}) for layer in self.layers],
            position=self.position,
        )


LAYER_STATE_FIELDS: Final = tuple(f.name for f in fields(LayerState))
"""The fields of :class:`LayerState`, in the order :func:`layer_state_tensors` lists them."""


def layer_state_tensors(state: LayerState) -> tuple[Tensor | None, ...]:
    """Every field of ``state`` in :data:`LAYER_STATE_FIELDS` order (None where absent): the
    leaves a pytree (``torch.export``) sees of a layer's state."""
    return tuple(getattr(state, name) for name in LAYER_STATE_FIELDS)


def layer_state_from_tensors(values: tuple[Tensor | None, ...] | list[Tensor | None]) -> LayerState:
    """The inverse of :func:`layer_state_tensors`."""
    if len(values) != len(LAYER_STATE_FIELDS):
        raise ValueError(f"a layer state has {len(LAYER_STATE_FIELDS)} fields, got {len(values)} values")
    return LayerState(**dict(zip(LAYER_STATE_FIELDS, values)))


def merge_key_masks(previous: Tensor | None, current: Tensor | None, previous_length: int, current_length: int, *, batch: int, device: torch.device) -> Tensor | None:
    """Concatenate two optional (B, T) masks, materialising all-True parts only when needed."""
    if previous is None and current is None:
        return None
    if previous is None:
        previous = torch.ones(batch, previous_length, dtype=torch.bool, device=device)
    if current is None:
        current = torch.ones(batch, current_length, dtype=torch.bool, device=device)
    return torch.cat([previous, current], dim=1)
