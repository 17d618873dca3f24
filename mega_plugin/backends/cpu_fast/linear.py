"""``OneDnnLinear``: an ``nn.Linear`` whose fp32 CPU GEMM runs in oneDNN.

The backend swaps the class of a model's ``nn.Linear`` modules to this subclass (same
parameters, same state-dict keys, same hooks), so every projection is still a module call
that forward hooks, PEFT and accelerate's offload see. Calls oneDNN does not serve, or serves
slower, run ``nn.Linear.forward``: other devices and dtypes, autocast, tracing and
compilation, ``torch.func`` transforms, tensor subclasses, broadcast operands and
decoding-sized inputs.
"""

from __future__ import annotations

from typing import Final

import torch.nn.functional as F
from torch import Tensor, nn

from ...core.tracing import capturing_graph
from ..module_walk import computes_own_product, plain_linear
from .onednn import context_allows, matmul_nt, serves, unsupported_tensor

MIN_ROWS: Final = 32
"""Fewer rows (decoding steps) stay on MKL, whose matrix-vector path has less overhead per call
than a oneDNN primitive (1 row of 256 -> 1088: 20 against 41 us; equal near 32 rows)."""


@plain_linear
class OneDnnLinear(nn.Linear):
    """``nn.Linear`` with the GEMM in oneDNN where that is faster (see the module doc)."""

    def forward(self, input: Tensor) -> Tensor:
        if not self._onednn_serves(input):
            return super().forward(input)
        rows = input.reshape(-1, input.shape[-1])  # a view where the strides allow
        return matmul_nt(rows, self.weight, self.bias).view(*input.shape[:-1], self.out_features)

    def _onednn_serves(self, input: Tensor) -> bool:
        if capturing_graph():
            return False  # a graph holds torch's own linear (the private op does not trace)
        if input.numel() < MIN_ROWS * input.shape[-1] or not serves(input.device, input.dtype).ok:
            return False
        if any(unsupported_tensor(tensor) is not None for tensor in (input, self.weight, self.bias)):
            return False
        return context_allows().ok


def project_rows(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` for a few rows (a decoding step): ``F.linear`` on the module's own weight and
    bias where that is all the call does, without the module call's own cost (~4 us, a fifth of a
    256 x 1088 product at one row); the module itself otherwise."""
    if x.numel() >= MIN_ROWS * x.shape[-1] or not computes_own_product(module):
        return module(x)
    return F.linear(x, module.weight, module.bias)


__all__ = ["MIN_ROWS", "OneDnnLinear", "project_rows"]
