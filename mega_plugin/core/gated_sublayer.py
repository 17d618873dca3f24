"""What the gated self-attention and the gated cross-attention share.

Both normalise their input (before or after), attend with one head over a shared
representation of size Z, and mix the result into the residual stream through an update
gate: ``Y = X + u * (dropout(H) - X)`` (then Norm(Y) when post-norm).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .activations import get_activation
from .config import MegaCoreConfig
from .dropout import MegaDropout
from .norms import SequenceNorm
from .ops import AttentionOptions, run_attention


class GatedSublayer(nn.Module):
    """Norm, dropouts, activation, relative bias and attention function of a gated sub-layer."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.shared_size = config.shared_representation_size
        self.prenorm = config.normalize_before_mega
        self.attention_activation = config.attention_activation
        self.kernel_name = config.attention_kernel
        self.init_std = config.initializer_range
        self.activation_name = config.activation
        self.activation = get_activation(config.activation)
        self.scale = self.shared_size**-0.5
        self.attention_dropout_p = config.attention_probs_dropout_prob
        self.dropout = MegaDropout(config.dropout_prob, featurewise=config.use_feature_dropout)
        self.hidden_dropout = MegaDropout(config.hidden_dropout_prob, featurewise=config.use_feature_dropout)
        self.norm = SequenceNorm.from_config(config)
        # subclasses add their projections, then ``rel_pos_bias``: the reference's order, which
        # seeded initialisation follows module by module

    def attend_frames(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        bias: Tensor,
        key_mask: Tensor | None,
        query_offset: int,
        *,
        causal: bool,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention over frames (see :class:`~.chunking.FrameAttention`) by the kernel chosen for the call."""
        options = AttentionOptions(
            activation=self.attention_activation,
            causal=causal,
            query_offset=query_offset,
            scale=self.scale,
            dropout_p=self.attention_dropout_p if self.training else 0.0,
            training=self.training,
            need_weights=need_weights,
        )
        return run_attention(query, key, value, bias, key_mask, options, kernel=self.kernel_name)

    def gated_residual(self, residual: Tensor, update: Tensor, hidden: Tensor) -> Tensor:
        """``X + u * (dropout(H) - X)``, normalised here when post-norm; each (B, L, D)."""
        out = torch.addcmul(residual, update, self.dropout(hidden) - residual)
        return out if self.prenorm else self.norm(out)
