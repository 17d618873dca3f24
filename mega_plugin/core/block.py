"""One MEGA block: gated attention, then the optional NFFN."""

from __future__ import annotations

from torch import Tensor, nn

from .config import MegaCoreConfig
from .ffn import NormalizedFeedForward
from .gated_attention import AttentionResult, MovingAverageGatedAttention
from .state import LayerState


class MegaBlock(nn.Module):
    """``mega_layer`` followed by ``nffn`` (when ``use_normalized_ffn``)."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        self.mega_layer = MovingAverageGatedAttention(config)
        self.nffn = NormalizedFeedForward(config) if config.use_normalized_ffn else None

    def forward(
        self,
        hidden: Tensor,
        *,
        key_mask: Tensor | None = None,
        causal: bool = False,
        state: LayerState | None = None,
        update_state: bool = False,
        need_weights: bool = False,
    ) -> AttentionResult:
        result = self.mega_layer(
            hidden,
            key_mask=key_mask,
            causal=causal,
            state=state,
            update_state=update_state,
            need_weights=need_weights,
        )
        if self.nffn is not None:
            result.hidden = self.nffn(result.hidden)
        return result
