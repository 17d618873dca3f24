"""The normalized feed-forward network (``nffn``) of a MEGA block."""

from __future__ import annotations

from torch import Tensor, nn

from .activations import get_activation
from .config import MegaCoreConfig
from .dropout import MegaDropout
from .norms import SequenceNorm


class NormalizedFeedForward(nn.Module):
    """``Y = X + dropout(fc2(dropout(act(fc1(Norm(X))))))``, pre-norm; post-norm normalises Y instead."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        self.prenorm = config.normalize_before_ffn
        self.activation_name = config.activation
        self.activation = get_activation(config.activation)
        self.dropout = MegaDropout(config.dropout_prob, featurewise=config.use_feature_dropout)
        self.hidden_dropout = MegaDropout(config.nffn_activation_dropout_prob, featurewise=config.use_feature_dropout)
        self.norm = SequenceNorm.from_config(config)
        self.fc1 = nn.Linear(config.hidden_size, config.nffn_hidden_size)
        self.fc2 = nn.Linear(config.nffn_hidden_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, L, D) -> (B, L, D)."""
        hidden = self.norm(x) if self.prenorm else x
        hidden = self.hidden_dropout(self.activation(self.fc1(hidden)))  # (B, L, F)
        out = self.dropout(self.fc2(hidden)) + x
        return out if self.prenorm else self.norm(out)
