"""Ground truth in float64 and gradients of a fixed upstream, for parity tests of kernels and models."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def fixed_upstream(out: Tensor) -> Tensor:
    """A deterministic upstream gradient for ``out``: ``linspace(-1, 1)`` in its shape and dtype."""
    return torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)


def in_float64(fn: Callable[..., Tensor], *tensors: Tensor | None) -> tuple[Tensor, list[Tensor]]:
    """``fn`` on float64 copies of ``tensors``: its output and the gradients of a fixed upstream."""
    copies = [None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in tensors]
    out = fn(*copies)
    grads = torch.autograd.grad(out, [c for c in copies if c is not None and c.requires_grad], fixed_upstream(out))
    return out, list(grads)


def with_grads(fn: Callable[..., Tensor], *tensors: Tensor | None) -> tuple[Tensor, list[Tensor]]:
    """``fn`` on ``tensors`` as given: its output and the gradients of the same fixed upstream."""
    out = fn(*tensors)
    grads = torch.autograd.grad(out, [t for t in tensors if t is not None and t.requires_grad], fixed_upstream(out))
    return out, list(grads)


def max_diff(a: Tensor, b: Tensor) -> float:
    """The largest absolute difference of two same-shaped tensors."""
    return (a - b).abs().max().item()
