"""Whether a call records an autograd graph: the switch between in-place / cached fast paths
(no grad) and the differentiable ones, asked by layers and kernels alike."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor


def records_grad(tensors: Iterable[Tensor | None]) -> bool:
    """True when grad mode is on and any of ``tensors`` (``None`` skipped) requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
