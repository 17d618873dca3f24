"""Token (and optional token-type) embeddings: ``embedding_layer`` in checkpoints."""

from __future__ import annotations

import math
from typing import Final

import torch
from torch import Tensor, nn

from .adaptive_input import AdaptiveInput
from .config import MegaCoreConfig
from .norms import SequenceNorm
from .real_number_embedding import RealNumberEmbedding
from .tracing import capturing_graph


class MegaEmbeddings(nn.Module):
    """Word embeddings (or, with ``input_type='real_numbers'``, the real-number embedding) plus,
    when configured, token-type embeddings. No positions: MEGA's EMA and relative bias carry position.
    ``word_embeddings`` is one ``nn.Embedding`` table, or an :class:`~.adaptive_input.AdaptiveInput`
    when ``adaptive_input_cutoffs`` is set."""

    def __init__(self, config: MegaCoreConfig) -> None:
        super().__init__()
        padding_idx = config.pad_token_id
        if padding_idx is not None and not 0 <= padding_idx < config.vocab_size:
            raise ValueError(f"pad_token_id={padding_idx} must lie in [0, vocab_size={config.vocab_size})")
        real_numbers = config.input_type == "real_numbers"
        self.word_embeddings: nn.Module | None = None
        if config.adaptive_input_cutoffs is not None and not real_numbers:
            self.word_embeddings = AdaptiveInput(config)
        elif not real_numbers:
            self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=padding_idx)
        self.real_number_embeddings = RealNumberEmbedding(config.hidden_size) if real_numbers else None
        self.embedding_norm = SequenceNorm.from_config(config) if config.normalize_embeddings else None
        self.dropout = nn.Dropout(config.embedding_dropout_prob)  # no parameters: no checkpoint keys
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.add_token_type_embeddings else None
        )
        self.scale = embedding_scale(config)

    def forward(
        self,
        input_ids: Tensor | None = None,
        *,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        input_values: Tensor | None = None,
    ) -> Tensor:
        """(B, L) ids, (B, L) real numbers (``input_values``) or (B, L, D) embeddings -> (B, L, D)."""
        if self.real_number_embeddings is not None:
            if input_ids is not None or (input_values is None) == (inputs_embeds is None):
                raise ValueError("a model with input_type='real_numbers' takes exactly one of input_values or inputs_embeds")
            embeddings = self.real_number_embeddings(input_values) if input_values is not None else inputs_embeds
            return self.finish(add_token_type_embeddings(embeddings, self.token_type_embeddings, token_type_ids))
        if input_values is not None:
            raise ValueError("input_values needs input_type='real_numbers'; this model takes token ids (input_ids)")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            # the table's current size: resize_token_embeddings may have replaced it
            input_ids = check_ids(input_ids, "input_ids", vocabulary_rows(self.word_embeddings), "vocab_size")
            embeddings = self.word_embeddings(input_ids)
        else:
            # table rows, as get_input_embeddings()(ids) gives them: scaled like ids
            check_embeddings_dtype(inputs_embeds, self.word_embeddings.weight.dtype)
            embeddings = inputs_embeds
        embeddings = scale_token_embeddings(embeddings, self.scale)
        return self.finish(add_token_type_embeddings(embeddings, self.token_type_embeddings, token_type_ids))

    def finish(self, embeddings: Tensor) -> Tensor:
        """The optional embedding norm (``normalize_embeddings``), then the embedding dropout: (B, L, D)."""
        if self.embedding_norm is not None:
            embeddings = self.embedding_norm(embeddings)
        return self.dropout(embeddings)


def vocabulary_rows(table: nn.Module) -> int:
    """How many token ids ``table`` (an embedding table or an adaptive input) covers."""
    if isinstance(table, AdaptiveInput):
        return table.num_embeddings
    return int(table.weight.shape[0])


def embedding_scale(config: MegaCoreConfig) -> float | None:
    """``sqrt(hidden_size)`` when ``config.scale_embeddings``, else None (no multiplication)."""
    return math.sqrt(config.hidden_size) if config.scale_embeddings else None


def scale_token_embeddings(embeddings: Tensor, scale: float | None) -> Tensor:
    """Token embeddings (*, D) times ``scale`` (the original's ``embed_scale * embed_tokens(x)``).

    The product is taken in the table's dtype, as the original computes it, so fp32 models match
    it exactly and fp16 ones round once, where the original rounds.
    """
    return embeddings if scale is None else embeddings * scale


def add_token_type_embeddings(
    embeddings: Tensor, token_type_embeddings: nn.Module | None, token_type_ids: Tensor | None = None
) -> Tensor:
    """``embeddings`` (*, D) plus the rows of ``token_type_ids`` (*) in ``token_type_embeddings``.

    ``token_type_embeddings`` is any embedding module with a ``weight`` of shape (T, D) (a
    ``torch.nn.Embedding``, a fairseq2 ``StandardEmbedding``), or None when the model has none.
    Without ids every position gets type 0, as the reference does (its row is added without
    building an id tensor). Non-zero ids on a model without the table, and ids outside
    ``[0, T)``, raise ``ValueError``.
    """
    if token_type_ids is not None:
        if token_type_ids.shape != embeddings.shape[:-1]:
            raise ValueError(
                f"token_type_ids has shape {tuple(token_type_ids.shape)}, expected {tuple(embeddings.shape[:-1])}"
            )
        if token_type_embeddings is None:
            if not capturing_graph() and bool((token_type_ids != 0).any()):
                raise ValueError(
                    "token_type_ids has non-zero entries but the model has no token-type embeddings "
                    "(add_token_type_embeddings=False); they would be ignored"
                )
            return embeddings
        token_type_ids = check_ids(token_type_ids, "token_type_ids", token_type_embeddings.weight.shape[0], "type_vocab_size")
        return embeddings + token_type_embeddings(token_type_ids)
    if token_type_embeddings is None:
        return embeddings
    return embeddings + token_type_embeddings.weight[0]


INDEX_DTYPES: Final = (torch.int64, torch.int32)
"""The id dtypes an embedding lookup takes as they are; other integer dtypes are widened to int64."""


def check_ids(ids: Tensor, name: str, limit: int, limit_name: str) -> Tensor:
    """``ids`` as an index tensor for a table of ``limit`` rows.

    Integer ids of any width are accepted (int8, int16 and unsigned ones are widened to int64,
    which loses nothing); floating-point, complex and bool ids raise ``TypeError`` naming the
    argument. Values outside ``[0, limit)`` raise ``ValueError`` in eager calls; a captured graph
    (:func:`~mega_plugin.core.tracing.capturing_graph`) has no values to check and skips it.
    """
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an integer tensor (int64, int32, or a narrower integer dtype such as "
            f"int16, int8 or uint8), got dtype {ids.dtype}"
        )
    if ids.dtype not in INDEX_DTYPES:
        ids = ids.long()
    if ids.numel() == 0 or capturing_graph():
        return ids
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= limit:
        raise ValueError(f"{name} must lie in [0, {limit_name}={limit}); found values in [{low}, {high}]")
    return ids


def check_embeddings_dtype(inputs_embeds: Tensor, table_dtype: torch.dtype) -> None:
    """``TypeError`` naming both dtypes unless ``inputs_embeds`` has the dtype of the word embeddings.

    Another floating dtype would either fail deep inside the first projection (float64 into a
    float32 model) or silently compute in a precision the model was not loaded in. Under autocast
    (on the device of ``inputs_embeds``) float32, float16 and bfloat16 are accepted, as autocast
    casts them; float64 is not (autocast leaves float64 alone).
    """
    if not inputs_embeds.dtype.is_floating_point:
        raise TypeError(f"inputs_embeds must be a floating-point tensor of dtype {table_dtype} (the model's), got {inputs_embeds.dtype}")
    if inputs_embeds.dtype != torch.float64 and torch.is_autocast_enabled(inputs_embeds.device.type):
        return  # autocast casts every projection's float32/16 input itself (never float64)
    if inputs_embeds.dtype != table_dtype:
        raise TypeError(
            f"inputs_embeds has dtype {inputs_embeds.dtype} but the model's word embeddings are {table_dtype}: "
            f"pass inputs_embeds.to({table_dtype}) (or convert the model with model.to({inputs_embeds.dtype}))"
        )
