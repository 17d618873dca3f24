"""The MEGA layer stack (``layers`` in checkpoints): every block in turn, with streaming state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor, nn

from .block import ENCODER_STATES_NEEDED, NO_CROSS_ATTENTION, MegaBlock
from .config import MegaCoreConfig
from .masks import encoder_key_mask, same_mask
from .state import MegaState


@dataclass
class StackOutput:
    """What the stack returns."""

    hidden: Tensor
    """(B, L, D) output of the last layer."""

    hidden_states: tuple[Tensor, ...] | None
    """The input followed by every layer's output, when asked for."""

    attentions: tuple[Tensor, ...] | None
    """Every layer's attention weights (B, C, Lq, Lk), when asked for."""

    state: MegaState | None
    """The streaming state after this call, when caching."""

    cross_attentions: tuple[Tensor, ...] | None = None
    """Every layer's cross-attention weights (B, L, S), when asked for (cross-attention only)."""


class MegaLayerStack(nn.ModuleList):
    """A ``ModuleList`` of :class:`MegaBlock` that also knows how to run them.

    Being a ``ModuleList`` keeps checkpoint keys as ``layers.{i}.*``.
    """

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__([MegaBlock(config) for _ in range(config.num_hidden_layers)])
        self.causal = config.is_decoder
        self.can_stream = not config.bidirectional
        self.has_cross_attention = config.add_cross_attention
        self.hidden_size = config.hidden_size

    def set_checkpointing(self, enable: bool = True, *, function: Callable[..., Any] | None = None) -> None:
        """Checkpoint every block in training (:class:`MegaBlock`), with ``function`` (default:
        ``torch.utils.checkpoint.checkpoint``, non-reentrant)."""
        for block in self:
            block.gradient_checkpointing = enable
            if function is not None:
                block._gradient_checkpointing_func = function

    def forward(
        self,
        hidden: Tensor,
        *,
        key_mask: Tensor | None = None,
        state: MegaState | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        encoder_hidden: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
    ) -> StackOutput:
        """Run every layer over ``hidden`` (B, L, D); ``key_mask`` (B, L) bool marks real tokens.

        With cross-attention, ``encoder_hidden`` (B, S, D) and its HF-style (B, S) 0/1
        ``encoder_attention_mask`` feed every layer's ``cross_attn``; once a state holds the
        projected encoder keys/values they may be omitted.
        """
        if (use_cache or state is not None) and not (self.causal and self.can_stream):
            raise ValueError(
                "incremental decoding needs a causal model: set is_decoder=True and bidirectional=False"
            )
        if use_cache and state is None:
            state = MegaState.empty(len(self))
        if state is not None and len(state.layers) != len(self):
            raise ValueError(f"state has {len(state.layers)} layers, the model has {len(self)}")
        encoder_mask = self._check_encoder_inputs(hidden, encoder_hidden, encoder_attention_mask, state)
        position = state.position if state is not None else 0
        all_hidden: list[Tensor] | None = [hidden] if output_hidden_states else None
        all_attentions: list[Tensor] | None = [] if output_attentions else None
        all_cross: list[Tensor] | None = [] if output_attentions and self.has_cross_attention else None
        new_layers = []
        for index, layer in enumerate(self):
            layer_state = state.layers[index] if state is not None else None
            kwargs = dict(
                key_mask=key_mask,
                causal=self.causal,
                state=layer_state,
                update_state=use_cache,
                need_weights=output_attentions,
                encoder_hidden=encoder_hidden,
                encoder_mask=encoder_mask,
                position=position,
            )
            result = layer(hidden, **kwargs)
            hidden = result.hidden
            if all_hidden is not None:
                all_hidden.append(hidden)
            if all_attentions is not None:
                all_attentions.append(result.weights)
            if all_cross is not None:
                all_cross.append(result.cross_weights)
            new_layers.append(result.state)
        new_state = None
        if use_cache:
            new_state = MegaState(layers=new_layers, position=(state.position if state else 0) + hidden.shape[1])
        return StackOutput(
            hidden=hidden,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_attentions) if all_attentions is not None else None,
            state=new_state,
            cross_attentions=tuple(all_cross) if all_cross is not None else None,
        )

    def _check_encoder_inputs(
        self,
        hidden: Tensor,
        encoder_hidden: Tensor | None,
        encoder_attention_mask: Tensor | None,
        state: MegaState | None,
    ) -> Tensor | None:
        """Validate the encoder inputs against the decoder batch; the (B, S) bool encoder mask or None."""
        if not self.has_cross_attention:
            if encoder_hidden is not None or encoder_attention_mask is not None:
                raise ValueError(NO_CROSS_ATTENTION)
            return None
        batch = hidden.shape[0]
        cached = state.layers[0].cross_keys if state is not None and state.layers else None
        if encoder_hidden is not None:
            if encoder_hidden.dim() != 3 or encoder_hidden.shape[0] != batch or encoder_hidden.shape[2] != self.hidden_size:
                raise ValueError(
                    f"encoder_hidden_states has shape {tuple(encoder_hidden.shape)}, expected "
                    f"({batch}, source_length, {self.hidden_size}) = (decoder batch, encoder length, hidden_size)"
                )
            source_length = encoder_hidden.shape[1]
            if cached is not None and source_length != cached.shape[1]:
                raise ValueError(
                    f"encoder_hidden_states have length {source_length} but the cache holds encoder "
                    f"keys of length {cached.shape[1]}: start a new cache for a new encoder output"
                )
        elif cached is not None:
            source_length = cached.shape[1]
        else:
            raise ValueError(ENCODER_STATES_NEEDED)
        mask = encoder_key_mask(encoder_attention_mask, batch=batch, source_length=source_length)
        if cached is not None and encoder_attention_mask is not None:
            cached_mask = state.layers[0].cross_key_mask if state is not None else None
            if not same_mask(mask, cached_mask):
                raise ValueError(
                    "encoder_attention_mask differs from the one the cached encoder keys were computed with: "
                    "start a new cache for a new encoder output"
                )
        return mask
