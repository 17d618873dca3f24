"""``linear`` kernels: ``input @ weight.T + bias`` for the projections of a MEGA layer.

Signature (see :mod:`.signatures`): ``fn(input, weight, bias)`` with ``input`` (..., K),
``weight`` (N, K) and ``bias`` (N) or None, returning (..., N), differentiable in all three.
"""

from __future__ import annotations

from typing import Any, Final, Mapping

import torch.nn.functional as F
from torch import Tensor

from .onednn import matmul_nt, unsupported_context


MIN_ROWS: Final = 32
"""Fewer rows (decoding steps) stay on MKL, whose matrix-vector path has less overhead per
call than a oneDNN primitive (1 row of 256 -> 1088: 20 against 41 us; equal near 32 rows)."""


def reference_linear(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The ``reference`` linear kernel: ``torch.nn.functional.linear``."""
    return F.linear(input, weight, bias)


def onednn_linear(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The ``onednn`` linear kernel: leading dims flattened (a view where the strides allow)."""
    rows = input.reshape(-1, input.shape[-1])
    return matmul_nt(rows, weight, bias).view(*input.shape[:-1], weight.shape[0])


def onednn_linear_supports(call: Mapping[str, Any]) -> str | None:
    """Accept fp32 CPU calls of plain tensors of >= :data:`MIN_ROWS` rows outside autocast, tracing and compilation."""
    if call.get("operand_issue"):
        return call["operand_issue"]
    if call.get("rows", MIN_ROWS) < MIN_ROWS:
        return f"{call['rows']} rows < {MIN_ROWS}: MKL's matrix-vector path has less overhead per call"
    return unsupported_context(device=call.get("device"), dtype=call.get("dtype"))


__all__ = ["MIN_ROWS", "onednn_linear", "onednn_linear_supports", "reference_linear"]
