"""Typed kernel calls with defaults, and a spy on the one function that chooses kernels.

``ema_call(length=4096)`` and ``attention_call(activation="laplace")`` build the frozen calls
:func:`mega_plugin.core.ops.select` takes; every field not given gets the default below
(float32 on CPU, no mask, no state, no dropout).
"""

from __future__ import annotations

from typing import Any, Final

import pytest
import torch

import mega_plugin.core.ops as ops
from mega_plugin.core.ops import AttentionCall, EmaCall, KernelSpec

EMA_DEFAULTS: Final[dict[str, Any]] = {
    "bidirectional": False,
    "truncation": None,
    "length": 64,
    "has_state": False,
    "dtype": torch.float32,
    "device": torch.device("cpu"),
}
ATTENTION_DEFAULTS: Final[dict[str, Any]] = {
    "activation": "softmax",
    "causal": False,
    "query_length": 8,
    "key_length": 8,
    "num_chunks": 1,
    "need_weights": False,
    "has_key_mask": False,
    "dropout_p": 0.0,
    "dtype": torch.float32,
    "device": torch.device("cpu"),
}


def ema_call(**overrides: Any) -> EmaCall:
    """A causal, untruncated, stateless fp32 CPU EMA over 64 steps, with ``overrides`` applied."""
    return EmaCall(**{**EMA_DEFAULTS, **overrides})


def attention_call(**overrides: Any) -> AttentionCall:
    """One unmasked bidirectional softmax frame of 8 x 8 in fp32 on CPU, with ``overrides`` applied."""
    return AttentionCall(**{**ATTENTION_DEFAULTS, **overrides})


def record_kernel_choices(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on (until ``monkeypatch`` undoes it), every kernel the layers run, as ``op/name``.

    Layers run kernels through ``run_ema`` / ``run_attention``, which ask :func:`mega_plugin.core.ops.select`;
    the returned list grows in call order.
    """
    chosen: list[str] = []
    real = ops.select

    def spy(op: str, requested: str, call: Any) -> KernelSpec:
        spec = real(op, requested, call)
        chosen.append(f"{op}/{spec.name}")
        return spec

    monkeypatch.setattr(ops, "select", spy)
    return chosen
