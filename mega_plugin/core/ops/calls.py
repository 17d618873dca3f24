"""What a kernel is asked to do: the typed calls of the ``ema`` and ``attention`` ops.

A call describes one invocation by everything a kernel may decline it for (sizes, options,
dtype, device), never by the tensors themselves. Calls are frozen and hashable: the registry
chooses a kernel once per distinct call and remembers the choice (:mod:`.registry`).

Kernels answer with a :class:`Support`: :data:`SUPPORTED`, or :func:`declined` with the reason.

The calling conventions::

    ema:       fn(x, coefficients, *, bidirectional, truncation, initial_state, return_state)
               x (B, L, D), zero at padded positions; coefficients: EmaCoefficients, each (K, N),
               K = 2D when bidirectional (forward rows first); initial_state (B, D, N) or None;
               -> (y (B, L, D) float32, final state (B, D, N) or None)

    attention: fn(query, key, value, bias, key_mask, *, activation, causal, query_offset, scale,
                  dropout_p, training, need_weights)
               query (B, C, Lq, Z), key (B, C, Lk, Z), value (B, C, Lk, V): C frames (chunks);
               bias (Lq, Lk) or None; key_mask (B, C, Lk) bool (True: real key) or None;
               causal: query i sees key j only if j <= query_offset + i;
               -> (output (B, C, Lq, V), weights (B, C, Lq, Lk) before dropout or None)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .registry import KernelSpec

EMA_POSITIONAL: Final = ("x", "coefficients")
EMA_KEYWORDS: Final = ("bidirectional", "truncation", "initial_state", "return_state")
ATTENTION_POSITIONAL: Final = ("query", "key", "value", "bias", "key_mask")
ATTENTION_KEYWORDS: Final = ("activation", "causal", "query_offset", "scale", "dropout_p", "training", "need_weights")

SIGNATURES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "ema": (EMA_POSITIONAL, EMA_KEYWORDS),
    "attention": (ATTENTION_POSITIONAL, ATTENTION_KEYWORDS),
}
"""Per op: the positional and the keyword parameters every kernel must accept."""


class KernelError(ValueError):
    """A kernel was asked for by a name that does not exist, cannot serve the call, or cannot take it."""


REMOVED_OPS: Final = {
    "linear": "projections are nn.Linear modules called as modules; a faster GEMM comes in through a "
    "backend that swaps them (hook mega_plugin_register_backends, see docs/plugins.md)",
}
"""Ops kernels could once be registered for, and where that moved."""


def check_kernel_signature(spec: KernelSpec) -> None:
    """Raise ``KernelError`` unless ``spec.fn`` can be called exactly as its op calls kernels."""
    if spec.op in REMOVED_OPS:
        raise KernelError(f"kernel {spec.name!r}: op={spec.op!r} no longer exists: {REMOVED_OPS[spec.op]}")
    if spec.op not in SIGNATURES:
        raise KernelError(f"kernel {spec.name!r}: op={spec.op!r} is unknown; allowed values: {', '.join(SIGNATURES)}")
    positional, keywords = SIGNATURES[spec.op]
    try:
        signature = inspect.signature(spec.fn)
    except (TypeError, ValueError) as error:
        raise KernelError(f"kernel {spec.op}/{spec.name}: cannot inspect its signature ({error})") from error
    try:
        signature.bind(*positional, **dict.fromkeys(keywords))
    except TypeError as error:
        call = f"fn({', '.join(positional)}, *, {', '.join(keywords)})"
        raise KernelError(f"kernel {spec.op}/{spec.name}: cannot be called as {call}: {error}") from None


@dataclass(frozen=True)
class Support:
    """Whether a kernel (or backend) can serve: ``reason`` is ``None`` when it can."""

    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


SUPPORTED: Final = Support()


def declined(reason: str) -> Support:
    """A :class:`Support` that says no, and why."""
    return Support(reason)


@dataclass(frozen=True)
class EmaCoefficients:
    """Per-channel EMA coefficients derived from the learned parameters, each (K, N)."""

    input_gain: Tensor
    """``sigmoid(damping) * expansion``: how much of x_t enters the state."""

    decay: Tensor
    """``1 - sigmoid(damping) * sigmoid(decay)``: how much of the state survives a step."""

    output_gain: Tensor
    """``projection / sqrt(N)``: how the N components are read out."""


class _ReadsLikeAMapping:
    """``call["length"]`` and ``call.get("length")``: plugins written against the dict calls keep working."""

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)

    def keys(self) -> list[str]:
        return [entry.name for entry in fields(self)]  # type: ignore[arg-type]


@dataclass(frozen=True)
class EmaCall(_ReadsLikeAMapping):
    """One EMA over (B, L, D) inputs."""

    bidirectional: bool
    truncation: int | None
    length: int
    has_state: bool
    """A state is carried in or asked back (streaming; causal only)."""
    dtype: torch.dtype
    device: torch.device


@dataclass(frozen=True)
class AttentionCall(_ReadsLikeAMapping):
    """One attention over C frames of Lq queries and Lk keys."""

    activation: str
    causal: bool
    query_length: int
    key_length: int
    num_chunks: int
    need_weights: bool
    has_key_mask: bool
    dropout_p: float
    dtype: torch.dtype
    device: torch.device
