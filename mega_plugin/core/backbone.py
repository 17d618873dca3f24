"""The standalone MEGA backbone: embeddings plus the layer stack, without a head."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .config import MegaCoreConfig
from .embeddings import MegaEmbeddings
from .init import initialize_tree
from .masks import padding_to_key_mask
from .norms import SequenceNorm
from .packing import rows_from_position_ids
from .stack import MegaLayerStack, StackOutput
from .state import MegaState


class MegaBackbone(nn.Module):
    """Embeddings plus the layer stack: the whole MEGA encoder/decoder without a head."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding_layer = MegaEmbeddings(config)
        self.layers = MegaLayerStack(config)
        self.final_norm = build_final_norm(config)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        initialize_tree(self, std=self.config.initializer_range)

    def forward(self, input_ids: Tensor | None = None, **options: Any) -> StackOutput:
        """``input_ids`` (B, L) or ``inputs_embeds`` (B, L, D) through every layer; options as :func:`run_backbone`."""
        return run_backbone(self.embedding_layer, self.layers, input_ids, final_norm=self.final_norm, **options)


def build_final_norm(config: MegaCoreConfig) -> SequenceNorm | None:
    """The norm after the last layer (``final_norm`` in checkpoints) when ``add_final_norm``, else None."""
    if not config.add_final_norm:
        return None
    return SequenceNorm(
        config.normalization_type, config.hidden_size, eps=config.norm_eps, affine=config.final_norm_affine
    )


def apply_final_norm(output: StackOutput, final_norm: nn.Module | None) -> StackOutput:
    """``output`` with ``final_norm`` applied to the last hidden state, or unchanged without one.

    The normalised state also replaces the last entry of ``hidden_states`` (the convention of HF
    models with a final norm, e.g. GPT-2), so ``hidden_states[-1]`` is ``last_hidden_state``.
    """
    if final_norm is None:
        return output
    hidden = final_norm(output.hidden)  # (B, L, D), per token: streaming needs no state
    output.hidden = hidden
    if output.hidden_states is not None:
        output.hidden_states = (*output.hidden_states[:-1], hidden)
    return output


def run_backbone(
    embedding_layer: MegaEmbeddings,
    layers: MegaLayerStack,
    input_ids: Tensor | None = None,
    *,
    attention_mask: Tensor | None = None,
    token_type_ids: Tensor | None = None,
    inputs_embeds: Tensor | None = None,
    input_values: Tensor | None = None,
    state: MegaState | None = None,
    use_cache: bool = False,
    output_hidden_states: bool = False,
    output_attentions: bool = False,
    encoder_hidden: Tensor | None = None,
    encoder_attention_mask: Tensor | None = None,
    final_norm: nn.Module | None = None,
) -> StackOutput:
    """Embed, turn the HF-style 0/1 ``attention_mask`` into key masks, run the stack, and apply
    ``final_norm`` (:func:`apply_final_norm`) when the model has one.

    Shared by :class:`MegaBackbone` and the adapters' models, which hold the same two modules
    under the same names (checkpoint keys ``embedding_layer.*`` and ``layers.*``).
    """
    embed_options = {} if input_values is None else {"input_values": input_values}  # (B, L) real numbers
    hidden = embedding_layer(input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds, **embed_options)
    batch, length = hidden.shape[:2]
    key_mask = padding_to_key_mask(
        attention_mask, batch=batch, length=length, position=state.position if state is not None else 0
    )
    output = layers(
        hidden,
        key_mask=key_mask,
        state=state,
        use_cache=use_cache,
        output_hidden_states=output_hidden_states,
        output_attentions=output_attentions,
        encoder_hidden=encoder_hidden,
        encoder_attention_mask=encoder_attention_mask,
    )
    return apply_final_norm(output, final_norm)


def run_packed(
    embedding_layer: MegaEmbeddings,
    layers: MegaLayerStack,
    input_ids: Tensor | None,
    position_ids: Tensor,
    *,
    token_type_ids: Tensor | None = None,
    inputs_embeds: Tensor | None = None,
    input_values: Tensor | None = None,
    output_hidden_states: bool = False,
    final_norm: nn.Module | None = None,
) -> StackOutput:
    """:func:`run_backbone` for a packed batch: documents restart ``position_ids`` (B, L) at 0.

    Each document runs as its own padded row (:mod:`.packing`), so neither the EMA nor the
    attention crosses a boundary; the outputs come back in the packed (B, L, D) layout.
    """
    embed_options = {} if input_values is None else {"input_values": input_values}
    hidden = embedding_layer(input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds, **embed_options)
    batch, length, width = hidden.shape
    rows = rows_from_position_ids(position_ids)
    key_mask = None if bool(rows.valid.all()) else rows.valid
    output = layers(rows.unpack(hidden.reshape(batch * length, width)), key_mask=key_mask, output_hidden_states=output_hidden_states)
    output = apply_final_norm(output, final_norm)

    def packed(tensor: Tensor) -> Tensor:  # (N, W, D) -> (B, L, D)
        return rows.pack(tensor, batch * length).reshape(batch, length, -1)

    output.hidden = packed(output.hidden)
    if output.hidden_states is not None:
        output.hidden_states = tuple(packed(state) for state in output.hidden_states)
    return output
