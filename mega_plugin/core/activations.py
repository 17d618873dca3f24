"""Activation functions by config name (``activation`` field)."""

from __future__ import annotations

import math
from typing import Callable, Final

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ACTIVATIONS


def gelu_accurate(x: Tensor) -> Tensor:
    """The tanh approximation of GELU (``gelu_accurate`` in the reference)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def identity(x: Tensor) -> Tensor:
    """The ``linear`` activation."""
    return x


_ACTIVATIONS: Final[dict[str, Callable[[Tensor], Tensor]]] = {
    "silu": F.silu,
    "relu": F.relu,
    "linear": identity,
    "gelu": F.gelu,
    "gelu_accurate": gelu_accurate,
}


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    """The function for ``name``; ``ValueError`` naming the allowed values otherwise."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation={name!r} is not supported; allowed values: {', '.join(ACTIVATIONS)}") from None
