"""Classification heads: sequence, multiple choice, token, and extractive QA."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import (
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from ...core.heads import MegaClassificationHead as CoreClassificationHead
from ...core.lra_head import MegaLraClassificationHead
from ...core.masks import padding_to_key_mask
from .configuration_mega import MegaConfig
from .losses import token_loss
from .modeling_mega import MegaModel, MegaPreTrainedModel

_PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def _classifier_dropout(config: MegaConfig) -> float:
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


class MegaClassificationHead(CoreClassificationHead):
    """The core first-token classification head, sized from an HF config."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config.hidden_size, config.num_labels, dropout=_classifier_dropout(config))


def sequence_classification_loss(config: MegaConfig, logits: Tensor, labels: Tensor) -> Tensor:
    """Regression (MSE), single-label (cross-entropy) or multi-label (BCE) by ``problem_type``."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    if config.problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ValueError(f"problem_type={config.problem_type!r} is not supported; allowed values: {', '.join(_PROBLEM_TYPES)}")


def build_sequence_head(config: MegaConfig) -> nn.Module:
    """The ``classifier`` of a sequence-level head: the HF first-token head, or the original LRA
    head (``classifier_style='lra'``: pooling, pair concatenation, MLP, bias-free ``out_proj``)."""
    if config.classifier_style == "lra":
        return MegaLraClassificationHead(config.to_core(), config.num_labels, dropout=_classifier_dropout(config))
    return MegaClassificationHead(config)


def key_mask_of(attention_mask: Tensor | None, hidden: Tensor) -> Tensor | None:
    """The (B, L) bool real-token mask of ``hidden`` (B, L, D) for pooling, or None (all real)."""
    return padding_to_key_mask(attention_mask, batch=hidden.shape[0], length=hidden.shape[1], position=0)


class MegaForSequenceClassification(MegaPreTrainedModel):
    """MEGA with a sequence classification or regression head (``classifier``).

    ``classifier_style='hf'`` (default): the first-token head of transformers' MEGA.
    ``classifier_style='lra'``: the original LRA head; with ``classifier_dual_input`` it scores a
    pair (LRA Retrieval): pass the second sequence as ``pair_input_ids`` / ``pair_attention_mask``
    (or ``pair_input_values`` for ``input_type='real_numbers'``). Real-number models take
    ``input_values`` (B, L) floats instead of ``input_ids``.
    """

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.classifier = build_sequence_head(config)
        self.post_init()

    def classify(
        self, hidden: Tensor, attention_mask: Tensor | None, pair: tuple[Tensor, Tensor | None] | None = None
    ) -> Tensor:
        """Logits (B, num_labels) from the last hidden state (B, L, D) (and the pair's, encoded)."""
        if isinstance(self.classifier, MegaLraClassificationHead):
            second = None if pair is None else (pair[0], key_mask_of(pair[1], pair[0]))
            return self.classifier(hidden, key_mask_of(attention_mask, hidden), pair=second)
        if pair is not None:
            raise ValueError("pair inputs need classifier_style='lra' with classifier_dual_input=True")
        return self.classifier(hidden)

    def encode_pair(
        self,
        pair_input_ids: Tensor | None,
        pair_attention_mask: Tensor | None,
        pair_input_values: Tensor | None,
        pair_token_type_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None] | None:
        """The second sequence's (last hidden state, attention mask), or None without one."""
        if pair_input_ids is None and pair_input_values is None:
            if self.config.classifier_dual_input:
                raise ValueError(
                    "classifier_dual_input=True: pass the second sequence as pair_input_ids "
                    "(or pair_input_values for input_type='real_numbers')"
                )
            return None
        extra = {} if pair_input_values is None else {"input_values": pair_input_values}
        encoded = self._encode(
            pair_input_ids,
            attention_mask=pair_attention_mask,
            token_type_ids=pair_token_type_ids,
            inputs_embeds=None,
            output_attentions=False,
            output_hidden_states=False,
            **extra,
        )
        return encoded.last_hidden_state, pair_attention_mask

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pair_input_ids: Tensor | None = None,
        pair_attention_mask: Tensor | None = None,
        pair_token_type_ids: Tensor | None = None,
        input_values: Tensor | None = None,
        pair_input_values: Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple[Tensor, ...]:
        if input_values is not None:
            kwargs["input_values"] = input_values
        outputs = self._encode(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        pair = self.encode_pair(pair_input_ids, pair_attention_mask, pair_input_values, pair_token_type_ids)
        logits = self.classify(outputs.last_hidden_state, attention_mask, pair)
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        return self._head_output(
            SequenceClassifierOutput,
            outputs,
            return_dict,
            loss=loss,
            logits=logits,
        )


class MegaForMultipleChoice(MegaPreTrainedModel):
    """MEGA scoring each choice from its pooled first token (``mega.pooler`` + ``classifier``)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.mega = MegaModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MultipleChoiceModelOutput | tuple[Tensor, ...]:
        """Inputs are (batch, num_choices, length) (embeddings: (batch, num_choices, length, hidden))."""
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise ValueError("pass input_ids or inputs_embeds")
        expected_dims = 3 if input_ids is not None else 4
        if reference.dim() != expected_dims:
            name = "input_ids" if input_ids is not None else "inputs_embeds"
            raise ValueError(f"{name} must have {expected_dims} dims (batch, num_choices, length...), got {tuple(reference.shape)}")
        num_choices = reference.shape[1]

        def flat(tensor: Tensor | None, keep: int) -> Tensor | None:
            # (B, C, *rest) -> (B * C, *rest), spelled out: -1 is ambiguous when rest is empty
            return None if tensor is None else tensor.reshape(tensor.shape[0] * tensor.shape[1], *tensor.shape[-keep:])

        outputs = self._encode(
            flat(input_ids, 1),
            token_type_ids=flat(token_type_ids, 1),
            attention_mask=flat(attention_mask, 1),
            inputs_embeds=flat(inputs_embeds, 2),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output)).view(-1, num_choices)
        loss = F.cross_entropy(logits, labels.to(logits.device)) if labels is not None else None
        return self._head_output(
            MultipleChoiceModelOutput,
            outputs,
            return_dict,
            loss=loss,
            logits=logits,
        )


class MegaForTokenClassification(MegaPreTrainedModel):
    """MEGA with a per-token classification head (``classifier``)."""

    accepts_loss_kwargs = True  # the loss honours num_items_in_batch (.losses.token_loss)

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput | tuple[Tensor, ...]:
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self._encode(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = token_loss(logits, labels, shift=False, num_items_in_batch=num_items_in_batch)
        return self._head_output(
            TokenClassifierOutput,
            outputs,
            return_dict,
            loss=loss,
            logits=logits,
        )


class MegaForQuestionAnswering(MegaPreTrainedModel):
    """MEGA with span start/end logits (``qa_outputs``); needs ``num_labels == 2``."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(f"MegaForQuestionAnswering needs num_labels=2 (start and end logits), got {config.num_labels}")
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        start_positions: Tensor | None = None,
        end_positions: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput | tuple[Tensor, ...]:
        outputs = self._encode(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are clamped to an ignored index, as in every HF QA head.
            ignored = start_logits.shape[1]
            start = start_positions.reshape(-1).clamp(0, ignored).to(start_logits.device)
            end = end_positions.reshape(-1).clamp(0, ignored).to(end_logits.device)
            loss = (
                F.cross_entropy(start_logits, start, ignore_index=ignored)
                + F.cross_entropy(end_logits, end, ignore_index=ignored)
            ) / 2
        return self._head_output(
            QuestionAnsweringModelOutput,
            outputs,
            return_dict,
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
        )
