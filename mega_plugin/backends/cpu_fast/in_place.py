"""Activations that overwrite their argument, for no-grad blocks that own their buffers."""

from __future__ import annotations

from typing import Callable, Final

import torch.nn.functional as F
from torch import Tensor

from ...core.activations import get_activation


def _silu(x: Tensor) -> Tensor:
    return F.silu(x, inplace=True)


def _relu(x: Tensor) -> Tensor:
    return F.relu(x, inplace=True)


def _identity(x: Tensor) -> Tensor:
    return x


IN_PLACE: Final[dict[str, Callable[[Tensor], Tensor]]] = {"silu": _silu, "relu": _relu, "linear": _identity}


def activation_in_place(name: str) -> Callable[[Tensor], Tensor]:
    """The activation ``name`` writing into its argument where torch can (silu, relu).

    The others (gelu, gelu_accurate) return a new tensor: always use the returned tensor.
    """
    return IN_PLACE.get(name) or get_activation(name)
