"""The decoding state in fixed buffers: allocated once per prompt, written in place every step.

Per layer: the EMA state (B, D, N) in fp32 and the keys (B, S, Z) and values (B, S, V) of the
current frame, one slot per position (S: the chunk size; without chunking, the longest sequence
decoded). A step writes its key and value at slot ``position % S`` and sees slots ``0 .. slot``;
after the last slot of a chunk the next position starts over at slot 0, and the slots after it
hold the finished chunk's keys, which the step masks. Nothing grows and nothing is copied
after the prompt: the state is the size of one frame whatever the context length.

``key_real`` (B, S) is kept only when the prompt had padding (left padding of a batch): 1.0 for
real tokens, 0.0 for padding; generated tokens are real.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...core.state import LayerState


@dataclass
class LayerBuffers:
    ema: Tensor  # (B, D, N) fp32
    keys: Tensor  # (B, S, Z)
    values: Tensor  # (B, S, V)
    key_real: Tensor | None  # (B, S) 1.0 / 0.0, None when every token is real

    @classmethod
    def load(cls, state: LayerState, *, slots: int, position: int) -> "LayerBuffers":
        """New buffers of ``slots`` positions holding a core layer state after ``position`` tokens."""
        ema, keys, values = _state_tensors(state)
        batch = keys.shape[0]
        buffers = cls(
            ema=torch.empty_like(ema, dtype=torch.float32),
            keys=keys.new_zeros(batch, slots, keys.shape[2]),
            values=values.new_zeros(batch, slots, values.shape[2]),
            key_real=None,
        )
        buffers.fill(state, position=position)
        return buffers

    def fits(self, state: LayerState) -> bool:
        """Whether :meth:`fill` can take ``state`` (same batch, sizes, dtypes and device)."""
        ema, keys, values = _state_tensors(state)
        return (
            ema.shape == self.ema.shape
            and (keys.shape[0], keys.shape[2], keys.dtype, keys.device)
            == (self.keys.shape[0], self.keys.shape[2], self.keys.dtype, self.keys.device)
            and (values.shape[2], values.dtype) == (self.values.shape[2], self.values.dtype)
        )

    def fill(self, state: LayerState, *, position: int) -> None:
        """Hold ``state`` (after ``position`` tokens) in these buffers, in place.

        The tensors stay the same objects, so a compiled step keeps its graph from one prompt
        to the next (``key_real`` comes or goes with the prompt's padding: a second graph).
        """
        ema, keys, values = _state_tensors(state)
        slots = self.keys.shape[1]
        cached = keys.shape[1]
        slot = position % slots
        # the core keeps the current chunk's keys; a full chunk may still be held when the next
        # position starts a new one (slot 0): those keys are never seen again
        if cached != slot and not (slot == 0 and cached == slots):
            raise ValueError(
                f"the prompt state holds {cached} keys at position {position}; a frame of {slots} "
                f"positions expects {slot} (is max_length or the chunk size what the model was run with?)"
            )
        kept = min(cached, slots)
        self.ema.copy_(ema)
        self.keys[:, :kept] = keys[:, :kept]
        self.values[:, :kept] = values[:, :kept]
        if state.key_mask is None or bool(state.key_mask.all()):
            self.key_real = None
            return
        if self.key_real is None:
            self.key_real = self.keys.new_ones(self.keys.shape[:2])
        self.key_real.fill_(1.0)
        self.key_real[:, :kept] = state.key_mask[:, :kept].to(self.key_real.dtype)

    def tensors(self) -> list[Tensor]:
        return [tensor for tensor in (self.ema, self.keys, self.values, self.key_real) if tensor is not None]


def _state_tensors(state: LayerState) -> tuple[Tensor, Tensor, Tensor]:
    if state.ema is None or state.keys is None or state.values is None:
        raise ValueError("static decoding needs a prompt state with the EMA state, keys and values of every layer")
    return state.ema, state.keys, state.values


def size_bytes(buffers: list[LayerBuffers]) -> int:
    return sum(tensor.numel() * tensor.element_size() for layer in buffers for tensor in layer.tensors())


__all__ = ["LayerBuffers", "size_bytes"]
