"""A layer's weights in the one-token step's form, kept on the layer between decoding steps.

:func:`~.decode_step.decode_step` runs the static decoder's step arithmetic
(:mod:`~mega_plugin.backends.token_step.step`), which reads an
:class:`~mega_plugin.backends.token_step.weights.AttentionWeights`: the EMA coefficients
in fp32 (the core recomputes them from four parameters on every call: ~35 us of small ops per
layer per token) and each projection's weight, split in halves for two cores. Building it per
token would cost what it saves, so it is built once and kept on the layer (not a parameter,
not a buffer, not in the state dict) with a key of everything it was derived from:

* the EMA parameters' identity, storage and version (an optimizer step, ``load_state_dict``,
  ``.to()``, ``.half()`` change one of them);
* the identity of every module and tensor the step reads through a reference (projections,
  norms, the query and key gains), the storage of the projections' weights (the halves are
  views of it) and whether each projection still computes its own product (a hook or a PEFT
  wrapper added since);
* whether more than one thread runs (the halves split a product over two);
* for chunks up to :data:`MAX_TABLE_SLOTS`, the relative bias parameters (the frame's bias table).

A key that differs rebuilds the snapshot; checking it costs ~10 us per layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Hashable

import torch
from torch import Tensor, nn

from ...core.gated_attention import MovingAverageGatedAttention
from ..module_walk import global_forward_hooks
from ..token_step.weights import AttentionWeights, attention_weights

_SNAPSHOT: Final = "_mega_plugin_step_weights"
MAX_TABLE_SLOTS: Final = 512
"""Chunks up to this size keep their (chunk, chunk) bias table in the snapshot (1 MiB in fp32 at
512): a step then reads its bias row instead of computing it (the rotary bias rotates a vector per
key: ~12 us per layer per token). Larger chunks and unchunked layers compute the row per step."""


@dataclass(frozen=True)
class StepWeights:
    """What :func:`~.decode_step.decode_step` reads: the weights, and one index tensor per slot
    of the frame table (None without a table)."""

    attention: AttentionWeights
    slots: tuple[Tensor, ...] | None  # (1,) int64 each


@dataclass(frozen=True)
class _Snapshot:
    key: Hashable
    weights: StepWeights


def _tensor_key(tensor: Tensor | None) -> tuple[object, ...] | None:
    if tensor is None:
        return None
    if tensor.is_inference():  # no version counter: never equal, so a snapshot of it is never reused
        return (id(tensor), object())
    return (id(tensor), tensor.data_ptr(), tensor._version)


def table_slots(layer: MovingAverageGatedAttention) -> int | None:
    """The frame table's size for ``layer`` (its chunk), or None (see :data:`MAX_TABLE_SLOTS`)."""
    chunk = layer.chunk_size
    return chunk if chunk is not None and chunk <= MAX_TABLE_SLOTS else None


def _projection_key(module: nn.Module | None) -> tuple[object, ...]:
    # the type and the hook counts decide computes_own_product; the weight's storage, the halves
    if module is None:
        return (None,)
    parameters = module._parameters
    return (
        id(module),
        type(module),
        len(module._forward_hooks),
        len(module._forward_pre_hooks),
        _tensor_key(parameters.get("weight")),
        _tensor_key(parameters.get("bias")),
    )


def snapshot_key(layer: MovingAverageGatedAttention) -> Hashable:
    """Everything :func:`step_weights` derives its snapshot from (see the module doc).

    Read through the modules' own dictionaries: ``nn.Module.__getattr__`` costs ~1.4 us a name,
    and a key reads some 20 names per layer per token."""
    modules = layer._modules
    derived = [*modules["ema_gate"]._parameters.values()]  # the EMA coefficients
    if table_slots(layer) is not None:
        derived.extend(modules["rel_pos_bias"]._parameters.values())  # the bias table
    norm = modules["norm"]
    return (
        torch.get_num_threads() > 1,
        global_forward_hooks(),
        tuple(_tensor_key(parameter) for parameter in derived),
        tuple(_projection_key(modules[name]) for name in ("v_proj", "mx_proj", "h_proj")),
        _tensor_key(layer._parameters["qk_weight"]),
        _tensor_key(layer._parameters["qk_bias"]),
        id(norm),
        None if norm is None else id(norm._modules.get("norm")),
        id(layer.__dict__.get("activation", modules.get("activation"))),
    )


def step_weights(layer: MovingAverageGatedAttention) -> StepWeights:
    """``layer``'s :class:`StepWeights`, rebuilt when its key changed."""
    key = snapshot_key(layer)
    snapshot = layer.__dict__.get(_SNAPSHOT)
    if isinstance(snapshot, _Snapshot) and snapshot.key == key:
        return snapshot.weights
    slots = table_slots(layer)
    with torch.no_grad():
        # eager steps see only the slots written so far: the visibility table is never read
        attention = dataclasses.replace(attention_weights(layer, slots=slots), visible_rows=None)
        device = layer.qk_weight.device
        indices = None if slots is None else tuple(torch.tensor([slot], device=device) for slot in range(slots))
    weights = StepWeights(attention=attention, slots=indices)
    layer.__dict__[_SNAPSHOT] = _Snapshot(key=key, weights=weights)  # a plain attribute, unseen by nn.Module
    return weights


__all__ = ["MAX_TABLE_SLOTS", "StepWeights", "snapshot_key", "step_weights", "table_slots"]
