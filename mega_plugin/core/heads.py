"""Output heads on top of the MEGA stack: the LM hidden transform, the pooler, the classifier.

The math of every head lives here once; adapters build these modules (or, where a checkpoint
layout puts the layers elsewhere, call :func:`tanh_dense` on their own layers) and only
translate names, configs and calling conventions. Attribute names are checkpoint names
(``dense``, ``out_proj``), so the HF state-dict keys are those of transformers 4.40-4.57.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def tanh_dense(hidden: Tensor, dense: nn.Module | None) -> Tensor:
    """``tanh(dense(hidden))``, or ``hidden`` unchanged when ``dense`` is None: (*, D) -> (*, D').

    The LM heads' optional hidden layer (HF ``add_lm_hidden_dense_layer``), the pooler and the
    classification head all apply this transform.
    """
    return torch.tanh(dense(hidden)) if dense is not None else hidden


def first_token(hidden: Tensor, reader: str) -> Tensor:
    """(B, L, D) -> (B, D), the first token; ``ValueError`` naming ``reader`` for a length-0 input."""
    if hidden.shape[1] == 0:
        raise ValueError(
            f"{reader} reads the first token, but the input has length 0: pass at least one token per sequence"
        )
    return hidden[:, 0]


class MegaLMHeadTransform(nn.Module):
    """The hidden transform before the vocabulary projection of a language-model head.

    ``dense`` is the optional ``D -> D`` layer (HF ``add_lm_hidden_dense_layer``; any module
    mapping (*, D) to (*, D), e.g. a framework's own linear layer); without it the transform is
    the identity.
    """

    def __init__(self, dense: nn.Module | None) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, hidden: Tensor) -> Tensor:
        """(*, D) -> (*, D)."""
        return tanh_dense(hidden, self.dense)


class MegaPooler(nn.Module):
    """``tanh(dense(h[:, 0]))``: the first token's summary (``pooler.dense`` in checkpoints)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        """(B, L, D) -> (B, D)."""
        return tanh_dense(first_token(hidden, "the pooler (pooler_output)"), self.dense)


class MegaClassificationHead(nn.Module):
    """First-token classifier: dropout, ``dense`` + tanh, dropout, ``out_proj``."""

    def __init__(self, hidden_size: int, num_labels: int, *, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: Tensor) -> Tensor:
        """(B, L, D) -> (B, num_labels) logits from the first token."""
        first = self.dropout(first_token(hidden, "the sequence classification head"))  # (B, D)
        return self.out_proj(self.dropout(tanh_dense(first, self.dense)))
