"""Training hooks of the ``mega`` family: torch.compile, activation checkpointing, FSDP.

fairseq2 calls them through the family (``ModelFamily.compile``, ``apply_layerwise_ac``,
``apply_fsdp``) when a recipe asks for compilation, layerwise AC or FSDP. The unit of all
three is the MEGA block (``model.decoder.layers[i]``).
"""

from __future__ import annotations

from typing import Any

from fairseq2.error import NotSupportedError
from fairseq2.models.utils.ac import apply_layerwise_ac
from fairseq2.models.utils.fsdp import apply_layerwise_fsdp
from fairseq2.nn.fsdp import FSDPWrapper
from torch.nn import Module

from .model import MegaCausalLM


def compile_mega_lm(model: MegaCausalLM, *args: Any, **kwargs: Any) -> None:
    """Compile every MEGA block on its own (the layer loop and the loss stay eager)."""
    for layer in model.decoder.layers:
        layer.compile(*args, **kwargs)


def apply_ac_to_mega_lm(model: MegaCausalLM, every_nth_layer: int) -> Module:
    """Checkpoint the activations of every ``every_nth_layer``-th MEGA block."""
    apply_layerwise_ac(model.decoder.layers, every_nth_layer)
    return model


def apply_fsdp_to_mega_lm(model: MegaCausalLM, granularity: str, wrapper: FSDPWrapper) -> Module:
    """Shard per MEGA block (``layer``) or the whole decoder as one unit (``stack``)."""
    if granularity == "layer":
        apply_layerwise_fsdp(model.decoder.layers, wrapper)
        return model
    if granularity == "stack":
        model.register_module("decoder", wrapper(model.decoder))
        return model
    raise NotSupportedError(f"granularity must be 'layer' or 'stack' for MEGA models, got {granularity!r}")
