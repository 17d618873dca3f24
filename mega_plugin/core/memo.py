"""Remembering no-grad results: whether a call records autograd, and a cache keyed by tensor values.

``records_grad`` is the switch between a remembered (or in-place) result and a differentiable
computation, asked by layers and kernels alike.

``ValueKeyedCache`` keeps results of no-grad computations keyed by the *values* of their inputs.

Why by value: a parameter changed in place (an optimizer step, ``load_state_dict``, init
through ``.data``) keeps its identity and, through ``.data``, even its ``_version``; a key
made of copies compared with ``torch.equal`` can never hand out a stale result. Used for the
rotary bias (one entry per module) and the EMA scan weights (one per layer, shared).
"""

from __future__ import annotations

from typing import Generic, Hashable, Iterable, Sequence, TypeVar

import torch
from torch import Tensor

Value = TypeVar("Value")


def records_grad(tensors: Iterable[Tensor | None]) -> bool:
    """True when grad mode is on and any of ``tensors`` (``None`` skipped) requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class ValueKeyedCache(Generic[Value]):
    """The ``capacity`` most recently used results, each under a plain key and tensor copies."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.entries: list[tuple[Hashable, tuple[Tensor, ...], Value]] = []
        """Most recent first; replaced as a whole (readers in other threads see a consistent list)."""

    def get(self, key: Hashable, tensors: Sequence[Tensor]) -> Value | None:
        """The result stored under ``key`` for tensors equal in value to ``tensors``, or None."""
        entries = self.entries  # read once: another thread may replace the list
        for entry in entries:
            entry_key, copies, value = entry
            if entry_key == key and len(copies) == len(tensors) and all(
                copy.shape == tensor.shape
                and copy.dtype == tensor.dtype
                and copy.device == tensor.device
                and torch.equal(copy, tensor)
                for copy, tensor in zip(copies, tensors)
            ):
                if entry is not entries[0]:
                    self.entries = [entry, *(e for e in entries if e is not entry)]
                return value
        return None

    def put(self, key: Hashable, tensors: Sequence[Tensor], value: Value) -> None:
        """Store ``value`` under ``key`` and copies of ``tensors``; the oldest entry beyond capacity goes."""
        copies = tuple(tensor.detach().clone() for tensor in tensors)
        self.entries = [(key, copies, value), *self.entries][: self.capacity]

    def clear(self) -> None:
        self.entries = []
