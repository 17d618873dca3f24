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
        """Buffers of ``slots`` positions holding a core layer state after ``position`` tokens."""
        if state.ema is None or state.keys is None or state.values is None:
            raise ValueError("static decoding needs a prompt state with the EMA state, keys and values of every layer")
        batch, cached = state.keys.shape[:2]
        slot = position % slots
        # the core keeps the current chunk's keys; a full chunk may still be held when the next
        # position starts a new one (slot 0): those keys are never seen again
        if cached != slot and not (slot == 0 and cached == slots):
            raise ValueError(
                f"the prompt state holds {cached} keys at position {position}; a frame of {slots} "
                f"positions expects {slot} (is max_length or the chunk size what the model was run with?)"
            )
        keys = state.keys.new_zeros(batch, slots, state.keys.shape[2])
        values = state.values.new_zeros(batch, slots, state.values.shape[2])
        kept = min(cached, slots)
        keys[:, :kept] = state.keys[:, :kept]
        values[:, :kept] = state.values[:, :kept]
        key_real = None
        if state.key_mask is not None and not bool(state.key_mask.all()):
            key_real = keys.new_ones(batch, slots)
            key_real[:, :kept] = state.key_mask[:, :kept].to(keys.dtype)
        return cls(ema=state.ema.float().clone(), keys=keys, values=values, key_real=key_real)

    def tensors(self) -> list[Tensor]:
        return [tensor for tensor in (self.ema, self.keys, self.values, self.key_real) if tensor is not None]


def size_bytes(buffers: list[LayerBuffers]) -> int:
    return sum(tensor.numel() * tensor.element_size() for layer in buffers for tensor in layer.tensors())


__all__ = ["LayerBuffers", "size_bytes"]
