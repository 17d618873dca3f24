"""The normalized feed-forward network (``nffn``) of a MEGA block."""

from __future__ import annotations

from torch import Tensor, nn

from .activations import get_activation
from .config import MegaCoreConfig
from .dropout import MegaDropout
from .norms import SequenceNorm


class NormalizedFeedForward(nn.Module):
    """``x + dropout(fc2(dropout(act(fc1(norm(x))))))``, pre- or post-norm."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        self.prenorm = config.normalize_before_ffn
        self.activation = get_activation(config.activation)
        self.dropout = MegaDropout(config.dropout_prob, featurewise=config.use_feature_dropout)
        self.hidden_dropout = MegaDropout(config.nffn_activation_dropout_prob, featurewise=config.use_feature_dropout)
        self.norm = SequenceNorm(
            config.normalization_type, config.hidden_size, eps=config.norm_eps, affine=config.norm_affine
        )
        self.fc1 = nn.Linear(config.hidden_size, config.nffn_hidden_size)
        self.fc2 = nn.Linear(config.nffn_hidden_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        hidden = self.norm(x) if self.prenorm else x
        hidden = self.hidden_dropout(self.activation(self.fc1(hidden)))
        out = self.dropout(self.fc2(hidden)) + residual
        return out if self.prenorm else self.norm(out)
