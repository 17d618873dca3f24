"""``MegaModelTester``: our tester, written to the protocol of transformers' common mixins.

``ModelTesterMixin`` asks its ``model_tester`` for ``prepare_config_and_inputs_for_common()``
(a config and the keyword inputs every head accepts) and reads a few size attributes
(``batch_size``, ``seq_length``, ``hidden_size``, ``num_hidden_layers``, ``vocab_size``,
``is_training``); the ``create_and_check_*`` methods check each head's output shapes.
One tester covers every head; ``chunking`` and ``decoder`` choose the variant.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mega_plugin.adapters.hf import (
    MegaConfig,
    MegaForCausalLM,
    MegaForMaskedLM,
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
    MegaForSequenceClassification,
    MegaForTokenClassification,
    MegaModel,
)


def random_ids(shape: tuple[int, ...], vocab: int, *, generator: torch.Generator) -> Tensor:
    # Ids 3.. so that no random token is the pad (1), bos (0) or eos (2) token.
    return torch.randint(3, vocab, shape, generator=generator)


class MegaModelTester:
    """Builds a tiny MEGA (hidden 16, 2 layers) and its inputs for the common mixins."""

    def __init__(self, parent: Any, *, chunking: bool = False, decoder: bool = False, seed: int = 0) -> None:
        self.parent = parent
        self.batch_size = 2
        self.seq_length = 8
        self.is_training = True
        self.use_input_mask = True
        self.use_token_type_ids = True
        self.use_labels = True
        self.vocab_size = 60
        self.hidden_size = 16
        self.num_hidden_layers = 2
        # MEGA has one attention head per layer (single-head gated attention).
        self.num_attention_heads = 1
        self.intermediate_size = 24
        self.type_vocab_size = 2
        self.num_labels = 3
        self.num_choices = 2
        self.chunking = chunking
        self.decoder = decoder
        self.chunk_size = 4
        # Length of the encoder states the decoder cross-attends to (not `encoder_seq_length`,
        # which the mixins read as the length of this model's own input).
        self.cross_seq_length = 5
        self.generator = torch.Generator().manual_seed(seed)

    def get_config(self) -> MegaConfig:
        return MegaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            intermediate_size=self.intermediate_size,
            shared_representation_size=8,
            ema_projection_size=4,
            nffn_hidden_size=20,
            max_positions=64,
            type_vocab_size=self.type_vocab_size,
            add_token_type_embeddings=True,
            use_chunking=self.chunking,
            chunk_size=self.chunk_size if self.chunking else -1,
            is_decoder=self.decoder,
            bidirectional=not self.decoder,
            add_cross_attention=self.decoder,
            initializer_range=0.02,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        )

    def prepare_config_and_inputs(self) -> tuple[MegaConfig, dict[str, Tensor], dict[str, Tensor]]:
        """(config, model inputs, labels): every label kind the heads take."""
        shape = (self.batch_size, self.seq_length)
        input_ids = random_ids(shape, self.vocab_size, generator=self.generator)
        # Right padding (two tokens) on the last row: the mask must hide it.
        attention_mask = torch.ones(shape, dtype=torch.long)
        attention_mask[-1, -2:] = 0
        token_type_ids = torch.randint(0, self.type_vocab_size, shape, generator=self.generator)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if self.decoder:
            encoder_shape = (self.batch_size, self.cross_seq_length, self.hidden_size)
            inputs["encoder_hidden_states"] = torch.randn(encoder_shape, generator=self.generator)
            inputs["encoder_attention_mask"] = torch.ones(encoder_shape[:2], dtype=torch.long)
        labels = {
            "sequence_labels": torch.randint(0, self.num_labels, (self.batch_size,), generator=self.generator),
            "token_labels": torch.randint(0, self.num_labels, shape, generator=self.generator),
            "choice_labels": torch.randint(0, self.num_choices, (self.batch_size,), generator=self.generator),
        }
        return self.get_config(), inputs, labels

    def prepare_config_and_inputs_for_common(self) -> tuple[MegaConfig, dict[str, Tensor]]:
        config, inputs, _ = self.prepare_config_and_inputs()
        return config, inputs

    # --- create_and_check_*: one per head, output shapes (and the loss where labels go in) ---

    def _built(self, model_class: type, config: MegaConfig) -> torch.nn.Module:
        return model_class(config).eval()

    def create_and_check_model(self, config: MegaConfig, inputs: dict[str, Tensor]) -> None:
        output = self._built(MegaModel, config)(**inputs)
        shape = (self.batch_size, self.seq_length, self.hidden_size)
        self.parent.assertEqual(tuple(output.last_hidden_state.shape), shape)
        self.parent.assertEqual(tuple(output.pooler_output.shape), (self.batch_size, self.hidden_size))

    def create_and_check_causal_lm(self, config: MegaConfig, inputs: dict[str, Tensor]) -> None:
        output = self._built(MegaForCausalLM, config)(**inputs, labels=inputs["input_ids"])
        self.parent.assertEqual(tuple(output.logits.shape), (self.batch_size, self.seq_length, self.vocab_size))
        self.parent.assertTrue(torch.isfinite(output.loss))

    def create_and_check_masked_lm(self, config: MegaConfig, inputs: dict[str, Tensor]) -> None:
        output = self._built(MegaForMaskedLM, config)(**inputs, labels=inputs["input_ids"])
        self.parent.assertEqual(tuple(output.logits.shape), (self.batch_size, self.seq_length, self.vocab_size))
        self.parent.assertTrue(torch.isfinite(output.loss))

    def create_and_check_sequence_classification(
        self, config: MegaConfig, inputs: dict[str, Tensor], labels: Tensor
    ) -> None:
        config.num_labels = self.num_labels
        output = self._built(MegaForSequenceClassification, config)(**inputs, labels=labels)
        self.parent.assertEqual(tuple(output.logits.shape), (self.batch_size, self.num_labels))
        self.parent.assertTrue(torch.isfinite(output.loss))

    def create_and_check_token_classification(
        self, config: MegaConfig, inputs: dict[str, Tensor], labels: Tensor
    ) -> None:
        config.num_labels = self.num_labels
        output = self._built(MegaForTokenClassification, config)(**inputs, labels=labels)
        self.parent.assertEqual(tuple(output.logits.shape), (self.batch_size, self.seq_length, self.num_labels))
        self.parent.assertTrue(torch.isfinite(output.loss))

    def create_and_check_multiple_choice(self, config: MegaConfig, inputs: dict[str, Tensor], labels: Tensor) -> None:
        # (B, L) -> (B, C, L): every choice sees the same ids here; the head flattens and regroups.
        expanded = {
            key: value.unsqueeze(1).expand(-1, self.num_choices, -1).contiguous()
            for key, value in inputs.items()
            if key in ("input_ids", "attention_mask", "token_type_ids")
        }
        output = self._built(MegaForMultipleChoice, config)(**expanded, labels=labels)
        self.parent.assertEqual(tuple(output.logits.shape), (self.batch_size, self.num_choices))
        self.parent.assertTrue(torch.isfinite(output.loss))

    def create_and_check_question_answering(
        self, config: MegaConfig, inputs: dict[str, Tensor], labels: Tensor
    ) -> None:
        model = self._built(MegaForQuestionAnswering, config)
        output = model(**inputs, start_positions=labels, end_positions=labels)
        self.parent.assertEqual(tuple(output.start_logits.shape), (self.batch_size, self.seq_length))
        self.parent.assertEqual(tuple(output.end_logits.shape), (self.batch_size, self.seq_length))
        self.parent.assertTrue(torch.isfinite(output.loss))
