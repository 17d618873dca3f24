"""Standard and feature-wise dropout for batch-first activations."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MegaDropout(nn.Module):
    """Dropout on (B, ..., F) tensors; ``featurewise`` drops whole features per batch element.

    Feature dropout zeroes feature ``f`` of sequence ``b`` at every position at once (the
    original MEGA's ``FeatureDropout``), which regularises the EMA channels as units.
    """

    def __init__(self, probability: float, *, featurewise: bool = False) -> None:
        super().__init__()
        self.probability = float(probability)
        self.featurewise = featurewise

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.probability == 0.0:
            return x
        if not self.featurewise:
            return F.dropout(x, p=self.probability, training=True)
        # One keep/drop draw per (batch, feature), broadcast over every other axis.
        mask_shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        keep = x.new_empty(mask_shape).bernoulli_(1.0 - self.probability)
        return x * keep / (1.0 - self.probability)

    def extra_repr(self) -> str:
        return f"p={self.probability}, featurewise={self.featurewise}"
