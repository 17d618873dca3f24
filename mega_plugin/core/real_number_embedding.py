"""Real-number (pixel) embedding: one float per position -> a D-vector, ``x * weight + bias``.

The input of the original LRA Image, Pathfinder and Path-X models (``--input-type image``):
each (normalised) pixel value scales a learned direction. Checkpoint keys:
``embedding_layer.real_number_embeddings.{weight, bias}``, both (D,).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RealNumberEmbedding(nn.Module):
    """(B, L) floats -> (B, L, D) = ``x[..., None] * weight + bias``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(features))
        self.bias = nn.Parameter(torch.empty(features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the original's initialisation: a unit-normal direction, a small normal offset
        nn.init.normal_(self.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.bias, mean=0.0, std=0.1)

    def forward(self, values: Tensor) -> Tensor:
        if not values.dtype.is_floating_point:
            raise TypeError(f"input_values must be a floating-point tensor (one real number per position), got {values.dtype}")
        if values.dim() != 2:
            raise ValueError(f"input_values must have shape (batch, length), got {tuple(values.shape)}")
        return values.to(self.weight.dtype).unsqueeze(-1) * self.weight + self.bias
