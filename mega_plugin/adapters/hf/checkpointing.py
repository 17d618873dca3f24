"""Blocks as transformers ``GradientCheckpointingLayer``s, checkpointing themselves.

transformers' tooling (its test suite, ``gradient_checkpointing_enable(every_n_layers=...)`` on
5.x, FSDP wrapping policies) looks for ``GradientCheckpointingLayer`` instances. The core's
:class:`~mega_plugin.core.block.MegaBlock` already checkpoints itself through the two attributes
``gradient_checkpointing_enable`` sets (``gradient_checkpointing``, ``_gradient_checkpointing_func``),
so :class:`MegaCheckpointingBlock` only adds the base class: transformers' own wrapper, which
checkpoints ``forward`` (5.x) or ``__call__`` (4.57) and expects tensor or tuple outputs, is
taken back out (a block returns a ``BlockResult`` and hands the checkpoint function tensors only).
Parameters, buffers and state-dict keys stay those of the core block.
"""

from __future__ import annotations

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from ...core.block import MegaBlock


class MegaCheckpointingBlock(MegaBlock, GradientCheckpointingLayer):
    """A :class:`MegaBlock` that transformers recognises as a checkpointing layer."""


# GradientCheckpointingLayer wraps the subclass's forward when it is created (5.x) or defines
# __call__ (4.57): both back to the plain module behaviour, the block checkpoints itself.
MegaCheckpointingBlock.forward = MegaBlock.forward  # type: ignore[method-assign]
MegaCheckpointingBlock.__call__ = nn.Module.__call__  # type: ignore[method-assign]


def as_checkpointing_layers(model: nn.Module) -> int:
    """Give every core block of ``model`` the :class:`MegaCheckpointingBlock` class; returns how many."""
    changed = 0
    for module in model.modules():
        if type(module) is MegaBlock:
            module.__class__ = MegaCheckpointingBlock
            changed += 1
    return changed
