"""``MegaCache`` as a pytree node (:mod:`torch.utils._pytree`), so it passes through
``torch.export`` (and ``torch.compile``) as an input and an output.

Leaves: the tensors the layers' states hold, layer by layer, in
:data:`~mega_plugin.core.state.LAYER_STATE_FIELDS` order. Context: the position and, per layer,
which fields hold a tensor (absent fields are not leaves). The context is what a graph is
specialised on besides the tensors' shapes: a step exported at one position refuses a cache at
another. Recorded states (``activate_past_recording``) are not part of the tree.

The cache class is passed in (:func:`register_pytree`) rather than imported, so ``cache.py`` can
register itself without an import cycle.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch.utils._pytree as pytree
from torch import Tensor

from ...core.state import LAYER_STATE_FIELDS, MegaState, layer_state_from_tensors, layer_state_tensors

PytreeContext = tuple[int, tuple[tuple[bool, ...], ...]]
"""(position, per layer which state fields hold a tensor)."""


class CacheLike(Protocol):
    """What the pytree functions read of a ``MegaCache``: its layers' states and its position."""

    position: int
    layers: list[Any]

    def __init__(self, state: MegaState | None = None) -> None: ...


def flatten(cache: CacheLike) -> tuple[list[Tensor], PytreeContext]:
    fields = [layer_state_tensors(layer.state) for layer in cache.layers]
    leaves = [tensor for layer in fields for tensor in layer if tensor is not None]
    present = tuple(tuple(tensor is not None for tensor in layer) for layer in fields)
    return leaves, (cache.position, present)


def leaf_names(context: PytreeContext) -> list[str]:
    """``layers.{i}.{field}`` for every leaf, in leaf order (the names export shows)."""
    return [
        f"layers.{index}.{name}"
        for index, layer in enumerate(context[1])
        for name, held in zip(LAYER_STATE_FIELDS, layer)
        if held
    ]


def unflatten_into(cache_class: type[CacheLike], leaves: Any, context: PytreeContext) -> CacheLike:
    position, present = context
    if not present:
        return cache_class()
    remaining = iter(leaves)
    layers = [layer_state_from_tensors([next(remaining) if held else None for held in layer]) for layer in present]
    return cache_class(MegaState(layers=layers, position=position))


def register_pytree(cache_class: type[CacheLike]) -> None:
    """Register ``cache_class`` as a pytree node (once; a second call does nothing)."""
    if cache_class in pytree.SUPPORTED_NODES:
        return

    def flatten_with_keys(cache: CacheLike) -> tuple[list[tuple[Any, Tensor]], PytreeContext]:
        leaves, context = flatten(cache)
        return [(pytree.MappingKey(name), leaf) for name, leaf in zip(leaf_names(context), leaves)], context

    def unflatten(leaves: Any, context: PytreeContext) -> CacheLike:
        return unflatten_into(cache_class, leaves, context)

    pytree.register_pytree_node(
        cache_class,
        flatten,
        unflatten,
        serialized_type_name=f"{cache_class.__module__}.{cache_class.__qualname__}",
        flatten_with_keys_fn=flatten_with_keys,
    )
