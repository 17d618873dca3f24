"""Which tensors a fast layer may overwrite: the hand-over between the layers of one stack call.

Why: on CPU the first touch of a fresh (B, L, D) output costs about 8 ms of page faults per
32 MiB, more than some of the arithmetic that fills it; writing a no-grad layer's output into
its own input instead saves one such allocation per sub-layer (6-12% of a long forward).

A layer may do that only when nobody else can read its input afterwards. Inside one call of
an accelerated stack that holds for every tensor a layer produced, and never for the stack's
own input (the caller's tensor) or for any tensor when hidden states are kept or hooks may
have seen them. :class:`HandOverStack` records that per call; layers ask :func:`may_overwrite`.
"""

from __future__ import annotations

import contextvars
from typing import Any, Final

from torch import Tensor, nn

from ...core.stack import MegaLayerStack, StackOutput
from ...core.tracing import capturing_graph
from ..module_walk import any_module, global_forward_hooks, has_forward_hooks
from .threads import fitted_threads

_NOTHING: Final = object()
_caller_input: contextvars.ContextVar[Any] = contextvars.ContextVar("mega_plugin_caller_input", default=_NOTHING)
"""Inside a hand-over stack call: the stack's input tensor (everything else it makes is private)."""


def may_overwrite(tensor: Tensor) -> bool:
    """Whether a fast layer may write its result into ``tensor`` (its input) in this call."""
    caller = _caller_input.get()
    return caller is not _NOTHING and tensor is not caller


def _hooks_may_read(stack: nn.Module) -> bool:
    """Whether any forward hook under ``stack`` (or a global one) could keep a layer's output."""
    return global_forward_hooks() or any_module(stack, has_forward_hooks)


class HandOverStack(MegaLayerStack):
    """:class:`MegaLayerStack` whose layers may overwrite the tensors the previous layer handed them,
    on no more threads than the cores other processes leave free (:mod:`.threads`)."""

    def forward(self, hidden: Tensor, **options: Any) -> StackOutput:
        # a captured graph gets the core's stack: no context variable, no hand-over of buffers,
        # no thread count fitted to the machine of the moment
        if capturing_graph():
            return super().forward(hidden, **options)
        if hidden.dim() == 3 and hidden.shape[1] == 1:
            # a decoding step: its layers make new tensors anyway (nothing to hand over), and the
            # walk for hooks would cost more than the step's elementwise ops
            return super().forward(hidden, **options)
        tokens = hidden.shape[0] * hidden.shape[1] if hidden.dim() == 3 and hidden.device.type == "cpu" else 0
        with fitted_threads(tokens):
            if options.get("output_hidden_states") or _hooks_may_read(self):
                return super().forward(hidden, **options)
            token = _caller_input.set(hidden)
            try:
                return super().forward(hidden, **options)
            finally:
                _caller_input.reset(token)
