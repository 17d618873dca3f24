"""What a kernel is asked to do: typed options, typed calls and typed answers.

* :class:`EmaOptions` / :class:`AttentionOptions`: how to run an op, handed to the kernel with
  its tensors (the conventions are in :mod:`.conventions`);
* :class:`EmaCall` / :class:`AttentionCall`: one invocation described by everything a kernel
  may decline it for (options, sizes, dtype, device), never by the tensors themselves. Calls
  are frozen and hashable: the registry chooses a kernel once per distinct call (:mod:`.registry`);
* :class:`Support`: a kernel's answer, :data:`SUPPORTED` or :func:`declined` with the reason
  (:class:`Rejected` when the call-time guard turned a plugin kernel down).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final

import torch
from torch import Tensor


@dataclass(frozen=True)
class EmaOptions:
    """How to run an EMA (besides its tensors)."""

    bidirectional: bool
    truncation: int | None
    """None, or the number of kernel lags to keep."""
    return_state: bool
    """Also return the (B, D, N) state after the last token (causal only)."""


@dataclass(frozen=True)
class AttentionOptions:
    """How to run an attention (besides its tensors)."""

    activation: str
    """``softmax``, ``laplace`` or ``relu2``."""
    causal: bool
    query_offset: int
    """Position of query 0 inside the key frame (streaming)."""
    scale: float
    """Softmax temperature applied to q.k (Z ** -0.5)."""
    dropout_p: float
    """Dropout on the attention weights, applied when ``training``."""
    training: bool
    need_weights: bool
    """Also return the weights before dropout."""


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
class Rejected(Support):
    """A decline by the call-time guard (:mod:`.guard`): the kernel misbehaved on a call like this one.

    Unlike a kernel's own decline, it does not make a kernel named in the config an error: the
    reference kernel serves the call instead.
    """


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
