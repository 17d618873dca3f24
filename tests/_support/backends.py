"""Models on the ``cpu_fast`` backend, for tests that compare its schedule with the core's reference path.

A bare ``MegaBackbone(config)`` is the pure reference; :func:`accelerated` applies the
``cpu_fast`` backend through ``mega_plugin.backends.accelerate`` (the way the HF and fairseq2
adapters do at build) and can force several row blocks per call at tiny sizes (``block_rows``
of the blocked modules); :func:`reference_copy` gives the same weights on the core's modules;
:func:`record_hand_overs` logs where each blocked sub-layer wrote its result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import pytest
from torch import Tensor, nn

from mega_plugin.backends import ENV_BACKENDS, accelerate, restore
from mega_plugin.backends.cpu_fast import NAME as CPU_FAST
from mega_plugin.backends.cpu_fast.ffn import BlockedFeedForward
from mega_plugin.backends.cpu_fast.layer import BlockedGatedAttention
from mega_plugin.backends.cpu_fast.onednn import onednn_available

Model = TypeVar("Model", bound=nn.Module)

BLOCKED: Final = (BlockedGatedAttention, BlockedFeedForward)
"""The modules that run in row blocks (``block_rows`` rows each)."""

requires_onednn: Final = pytest.mark.skipif(not onednn_available().ok, reason=f"oneDNN: {onednn_available().reason}")
"""Skip where oneDNN's fp32 GEMM does not work (the ``onednn`` kernel and ``OneDnnLinear`` need it)."""


def blocked_modules(model: nn.Module) -> list[nn.Module]:
    """Every row-blocked module of ``model`` (none before it is accelerated)."""
    return [module for module in model.modules() if isinstance(module, BLOCKED)]


def set_block_rows(model: nn.Module, rows: int) -> int:
    """Set ``block_rows`` on every row-blocked module of ``model``; returns how many were set."""
    modules = blocked_modules(model)
    for module in modules:
        module.block_rows = rows
    return len(modules)


def accelerated(model: Model, *, block_rows: int | None = None) -> Model:
    """``model`` on the ``cpu_fast`` backend (in place, whatever ``MEGA_PLUGIN_BACKENDS`` says);
    with ``block_rows``, every blocked module runs blocks of that many rows."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(ENV_BACKENDS, raising=False)
        applied = accelerate(model, names=[CPU_FAST])
    assert applied == [CPU_FAST], applied
    assert blocked_modules(model), "cpu_fast swapped no module: the blocked path would not be exercised"
    if block_rows is not None:
        set_block_rows(model, block_rows)
    return model


def reference_copy(model: Model) -> Model:
    """A deep copy of ``model`` with every backend undone: the core's reference modules, same weights."""
    twin = copy.deepcopy(model)
    restore(twin)
    assert not blocked_modules(twin)
    return twin


@dataclass(frozen=True)
class HandOver:
    """One call of a row-blocked sub-layer: where its input lay and where its output went."""

    kind: str
    """``"attention"`` (``BlockedGatedAttention``) or ``"ffn"`` (``BlockedFeedForward``)."""
    prenorm: bool
    input_pointer: int
    output_pointer: int

    @property
    def in_place(self) -> bool:
        """The sub-layer wrote its output into its input tensor."""
        return self.input_pointer == self.output_pointer


def record_hand_overs(monkeypatch: pytest.MonkeyPatch) -> list[HandOver]:
    """From now on, every call of a row-blocked sub-layer, in call order.

    The classes' ``forward`` is wrapped (a forward hook would itself switch the hand-over off).
    """
    calls: list[HandOver] = []
    for kind, cls in (("attention", BlockedGatedAttention), ("ffn", BlockedFeedForward)):
        real = cls.forward

        def forward(self: nn.Module, x: Tensor, *args: Any, _real: Any = real, _kind: str = kind, **kwargs: Any) -> Any:
            pointer = x.data_ptr()
            result = _real(self, x, *args, **kwargs)
            out = result if isinstance(result, Tensor) else result.hidden
            calls.append(HandOver(_kind, bool(self.prenorm), pointer, out.data_ptr()))
            return result

        monkeypatch.setattr(cls, "forward", forward)
    return calls
