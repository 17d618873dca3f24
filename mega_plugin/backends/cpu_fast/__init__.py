"""``cpu_fast``: the CPU inference and training schedule, chosen once when a model is accelerated.

What it swaps in (:func:`accelerate`; same parameters, same state-dict keys, same hooks):

* :class:`~.layer.BlockedGatedAttention` and :class:`~.ffn.BlockedFeedForward`: after the EMA,
  every op runs per row block of whole attention frames (:mod:`.row_blocks`), in place where
  no gradient is recorded; a decoding step (one token after a state) runs the static decoder's
  one-token step on the layer's own state (:mod:`.decode_step`, weights kept by :mod:`.step_weights`);
* :class:`~.ownership.HandOverStack`: inside one stack call a no-grad layer writes its output
  into the tensor the previous layer handed it; a long call runs on no more threads than the
  cores other processes leave free (:mod:`.threads`);
* :class:`~.linear.OneDnnLinear`: fp32 projections as oneDNN GEMMs, where oneDNN works here;
* around every call of the model handed to :func:`accelerate` (when it is not a bare stack): the
  thread count fitted to the free cores (:func:`.threads.attach_model_fit`).

and the ``onednn`` attention kernel (the reference arithmetic frame by frame in oneDNN GEMMs).
Each module falls back to the core's own forward for the calls it does not serve (other
devices, compilation, streaming prompts, attention weights, dropout in training).
"""

from __future__ import annotations

from typing import Final

from torch import nn

from ...core.ffn import NormalizedFeedForward
from ...core.gated_attention import MovingAverageGatedAttention
from ...core.ops import KernelSpec
from ...core.stack import MegaLayerStack
from .attention_onednn import onednn_attention, onednn_attention_supports
from .ffn import BlockedFeedForward
from .layer import BlockedGatedAttention
from .linear import OneDnnLinear
from .onednn import context_allows, onednn_available
from .ownership import HandOverStack
from .threads import attach_model_fit, detach_model_fit

NAME: Final = "cpu_fast"

ONEDNN_ATTENTION: Final = KernelSpec(
    name="onednn",
    op="attention",
    fn=onednn_attention,
    priority=7,
    is_available=onednn_available,
    supports=onednn_attention_supports,
    guard=context_allows,
    description="the reference arithmetic frame by frame in oneDNN fp32 GEMMs (CPU; AVX-512 where MKL runs AVX2)",
)
KERNELS: Final = (ONEDNN_ATTENTION,)

_SWAPS: Final[dict[type[nn.Module], type[nn.Module]]] = {
    MovingAverageGatedAttention: BlockedGatedAttention,
    NormalizedFeedForward: BlockedFeedForward,
    MegaLayerStack: HandOverStack,
}


def _swaps() -> dict[type[nn.Module], type[nn.Module]]:
    swaps = dict(_SWAPS)
    if onednn_available().ok:
        swaps[nn.Linear] = OneDnnLinear
    return swaps


def accelerate(model: nn.Module) -> int:
    """Swap the classes of ``model``'s modules to their fast subclasses; returns how many changed.

    Only exact instances change (a subclass someone else made, e.g. a PEFT wrapper, stays as it is).
    A whole model (not a bare stack, which fits its own long calls) also gets its calls' thread
    count fitted to the free cores.
    """
    if not isinstance(model, MegaLayerStack):
        attach_model_fit(model)
    swaps = _swaps()
    changed = 0
    for module in model.modules():
        fast = swaps.get(type(module))
        if fast is not None:
            module.__class__ = fast
            changed += 1
    return changed


def restore(model: nn.Module) -> int:
    """Undo :func:`accelerate`: every fast module goes back to its core class; returns how many."""
    originals = {fast: original for original, fast in (*_SWAPS.items(), (nn.Linear, OneDnnLinear))}
    changed = 0
    for module in model.modules():
        detach_model_fit(module)
        original = originals.get(type(module))
        if original is not None:
            module.__class__ = original
            module.__dict__.pop("_row_block_plans", None)
            changed += 1
    return changed


__all__ = ["KERNELS", "NAME", "ONEDNN_ATTENTION", "accelerate", "restore"]
