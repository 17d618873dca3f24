"""The original LRA classification head: pool, (concatenate a pair), MLP, bias-free projection.

Checkpoint keys (under the head's name, ``classifier`` in HF models): ``layers.{i}.{weight, bias}``
for the ``classifier_layers`` linear layers and ``out_proj.weight`` (no bias), as the original's
``classifier.{i}.0`` and ``sentence_projection_layer``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .activations import get_activation
from .config import MegaCoreConfig


def pool_sequence(hidden: Tensor, key_mask: Tensor | None, *, pooling: str) -> Tensor:
    """(B, L, D) -> (B, D): the first position, or the mean over real positions.

    ``key_mask`` is (B, L) bool (True = real token) or None (all real). Mean pooling zeroes the
    padded positions, sums over the length and divides by the number of real tokens, as the
    original's ``sen_rep_type='mp'`` does with its ``src_lengths``.
    """
    if pooling == "first":
        return hidden[:, 0]
    if pooling != "mean":
        raise ValueError(f"classifier_pooling={pooling!r} is not supported; allowed values: first, mean")
    if key_mask is None:
        return hidden.sum(dim=1) / hidden.shape[1]
    keep = key_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    lengths = keep.sum(dim=1)  # (B, 1)
    return (hidden * keep).sum(dim=1) / lengths


def classifier_activation(name: str) -> Callable[[Tensor], Tensor]:
    """The ``classifier_activation`` function (the core activations plus ``tanh``)."""
    return torch.tanh if name == "tanh" else get_activation(name)


class MegaLraClassificationHead(nn.Module):
    """Pooled features (B, F) -> logits (B, num_labels); F = hidden_size, or 2 * hidden_size for pairs.

    Each layer is ``act(dropout(linear(x)))`` (the original applies dropout inside the layer and
    the activation after it); ``out_proj`` has no bias.
    """

    def __init__(self, config: MegaCoreConfig, num_labels: int, *, dropout: float) -> None:
        super().__init__()
        self.pooling = config.classifier_pooling
        self.dual_input = config.classifier_dual_input
        width = config.classifier_width
        inputs = config.hidden_size * (2 if self.dual_input else 1)
        sizes = [inputs] + [width] * config.classifier_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.dropout = nn.Dropout(dropout)
        self.activation = classifier_activation(config.classifier_activation)
        self.out_proj = nn.Linear(sizes[-1], num_labels, bias=False)

    def features(self, hidden: Tensor, key_mask: Tensor | None, pair: tuple[Tensor, Tensor | None] | None) -> Tensor:
        """Pooled (B, F): one sequence, or [pooled second, pooled first] for a pair (the original's order)."""
        pooled = pool_sequence(hidden, key_mask, pooling=self.pooling)
        if not self.dual_input:
            if pair is not None:
                raise ValueError("this head scores one sequence (classifier_dual_input=False); got a second input")
            return pooled
        if pair is None:
            raise ValueError("this head scores a pair of sequences (classifier_dual_input=True); pass the second input")
        second = pool_sequence(pair[0], pair[1], pooling=self.pooling)
        return torch.cat([second, pooled], dim=-1)

    def forward(
        self, hidden: Tensor, key_mask: Tensor | None = None, *, pair: tuple[Tensor, Tensor | None] | None = None
    ) -> Tensor:
        """``hidden`` (B, L, D) with its (B, L) bool ``key_mask``; ``pair``: the second sequence's
        (hidden, key_mask) when ``classifier_dual_input``. Returns (B, num_labels)."""
        x = self.features(hidden, key_mask, pair)
        for layer in self.layers:
            x = self.activation(self.dropout(layer(x)))
        return self.out_proj(x)


__all__ = ["MegaLraClassificationHead", "classifier_activation", "pool_sequence"]
