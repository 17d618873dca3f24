"""The MEGA layer stack (``layers`` in checkpoints) and a standalone backbone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .block import MegaBlock
from .config import MegaCoreConfig
from .embeddings import MegaEmbeddings
from .init import initialize_tree
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


def padding_to_key_mask(
    attention_mask: Tensor | None, *, batch: int, length: int, position: int
) -> Tensor | None:
    """HF-style (B, L) or (B, position + L) 0/1 mask -> (B, L) bool for the new tokens.

    Returns None when every token is real (the fast path, and exactly the reference's
    unmasked computation).
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] not in (
        length,
        position + length,
    ):
        expected = f"({batch}, {length})" + (f" or ({batch}, {position + length})" if position else "")
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {expected}")
    mask = attention_mask[:, -length:] if length else attention_mask[:, :0]
    mask = mask if mask.dtype == torch.bool else mask != 0
    return None if bool(mask.all()) else mask


class MegaLayerStack(nn.ModuleList):
    """A ``ModuleList`` of :class:`MegaBlock` that also knows how to run them.

    Being a ``ModuleList`` keeps checkpoint keys as ``layers.{i}.*``.
    """

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__([MegaBlock(config) for _ in range(config.num_hidden_layers)])
        self.causal = config.is_decoder
        self.can_stream = not config.bidirectional
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden: Tensor,
        *,
        key_mask: Tensor | None = None,
        state: MegaState | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> StackOutput:
        """Run every layer over ``hidden`` (B, L, D); ``key_mask`` (B, L) bool marks real tokens."""
        if (use_cache or state is not None) and not (self.causal and self.can_stream):
            raise ValueError(
                "incremental decoding needs a causal model: set is_decoder=True and bidirectional=False"
            )
        if use_cache and state is None:
            state = MegaState.empty(len(self))
        if state is not None and len(state.layers) != len(self):
            raise ValueError(f"state has {len(state.layers)} layers, the model has {len(self)}")
        all_hidden: list[Tensor] | None = [hidden] if output_hidden_states else None
        all_attentions: list[Tensor] | None = [] if output_attentions else None
        new_layers = []
        for index, layer in enumerate(self):
            layer_state = state.layers[index] if state is not None else None
            kwargs = dict(
                key_mask=key_mask,
                causal=self.causal,
                state=layer_state,
                update_state=use_cache,
                need_weights=output_attentions,
            )
            if self.gradient_checkpointing and self.training and not use_cache and torch.is_grad_enabled():
                result = checkpoint(layer, hidden, use_reentrant=False, **kwargs)
            else:
                result = layer(hidden, **kwargs)
            hidden = result.hidden
            if all_hidden is not None:
                all_hidden.append(hidden)
            if all_attentions is not None:
                all_attentions.append(result.weights)
            new_layers.append(result.state)
        new_state = None
        if use_cache:
            new_state = MegaState(layers=new_layers, position=(state.position if state else 0) + hidden.shape[1])
        return StackOutput(
            hidden=hidden,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_attentions) if all_attentions is not None else None,
            state=new_state,
        )


class MegaBackbone(nn.Module):
    """Embeddings plus the layer stack: the whole MEGA encoder/decoder without a head."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding_layer = MegaEmbeddings(config)
        self.layers = MegaLayerStack(config)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        initialize_tree(self, std=self.config.initializer_range)

    def forward(
        self,
        input_ids: Tensor | None = None,
        *,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        state: MegaState | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> StackOutput:
        hidden = self.embedding_layer(input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds)
        batch, length = hidden.shape[:2]
        key_mask = padding_to_key_mask(
            attention_mask, batch=batch, length=length, position=state.position if state is not None else 0
        )
        return self.layers(
            hidden,
            key_mask=key_mask,
            state=state,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
