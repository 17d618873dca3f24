"""When a layer may run in row blocks: decided once per call signature and remembered on the layer.

Row blocks (and sequence groups) give exactly the whole-tensor result in eval; in training
only without a batch norm (its statistics span the whole batch) and without active dropout
(feature dropout draws one mask per sequence, and blocks would draw in another order). They
are a CPU schedule: other devices, and compilers, get the core's whole-tensor path.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import torch
from torch import Tensor, nn

from ...core.tracing import capturing_graph
from ..module_walk import weights_elsewhere


class BlockableLayer(Protocol):
    def parameters(self) -> Iterator[nn.Parameter]: ...

    training: bool
    norm: torch.nn.Module


def runs_in_blocks(layer: BlockableLayer, x: Tensor, *, dropouts: tuple[float, ...]) -> bool:
    """Whether ``layer`` runs ``x`` (B, L, D) in row blocks."""
    if x.dim() != 3 or x.numel() == 0:
        return False  # an empty batch or length: nothing to block
    if capturing_graph():
        return False  # compilers and exporters see the core's whole-tensor ops
    if weights_elsewhere(layer):
        return False  # offloaded: only the core's module calls bring the weights in
    signature = (x.device.type, layer.training, dropouts)
    plans: dict[tuple[object, ...], bool] | None = layer.__dict__.get("_row_block_plans")
    if plans is None:
        plans = layer.__dict__["_row_block_plans"] = {}
    plan = plans.get(signature)
    if plan is None:
        exact = not layer.training or (not getattr(layer.norm, "is_batch_norm", False) and max(dropouts, default=0.0) == 0.0)
        plan = plans[signature] = x.device.type == "cpu" and exact
    return plan
