"""Bad configurations and bad inputs raise ValueError naming the field and what is allowed."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import TINY  # noqa: E402
from mega_plugin.adapters.hf import (  # noqa: E402
    MegaConfig,
    MegaForCausalLM,
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
    MegaForSequenceClassification,
    MegaModel,
)


def config(**overrides: Any) -> MegaConfig:
    values = dict(TINY)
    values.update(overrides)
    return MegaConfig(**values)


def words(*parts: str) -> str:
    """A regex requiring every part, in order, anywhere in the message."""
    return ".*".join(re.escape(part) for part in parts)


BAD_CHOICES = [
    pytest.param(
        "normalization_type",
        "groupnorm",
        ("scalenorm", "layernorm", "rmsnorm", "batchnorm", "syncbatchnorm"),
        id="normalization_type",
    ),
    pytest.param("activation", "tanh", ("silu", "relu", "linear", "gelu", "gelu_accurate"), id="activation"),
    pytest.param("attention_activation", "sigmoid", ("softmax", "laplace", "relu2"), id="attention_activation"),
    pytest.param("relative_positional_bias", "alibi", ("simple", "rotary"), id="relative_positional_bias"),
]


@pytest.mark.parametrize(("field", "value", "allowed"), BAD_CHOICES)
@pytest.mark.parametrize("model_class", [MegaModel, MegaForCausalLM], ids=lambda c: c.__name__)
def test_unknown_choice(model_class: type, field: str, value: str, allowed: tuple[str, ...]) -> None:
    overrides: dict[str, Any] = {field: value}
    if model_class is MegaForCausalLM:
        overrides.update(is_decoder=True, bidirectional=False)
    with pytest.raises(ValueError, match=words(field, repr(value))) as info:
        model_class(config(**overrides))
    message = str(info.value)
    for name in allowed:
        assert name in message, (name, message)


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_chunking_needs_a_positive_chunk_size(chunk_size: int) -> None:
    with pytest.raises(ValueError, match=words("chunk_size", "positive integer", "use_chunking", str(chunk_size))):
        MegaModel(config(use_chunking=True, chunk_size=chunk_size))


def test_decoder_cannot_have_a_bidirectional_ema() -> None:
    with pytest.raises(ValueError, match=words("is_decoder=True", "bidirectional=False")):
        MegaForCausalLM(config(is_decoder=True, bidirectional=True))


def test_truncation_must_be_positive() -> None:
    with pytest.raises(ValueError, match=words("truncation", "None or a positive integer")):
        MegaModel(config(truncation=0))


def test_odd_shared_size_with_rotary_bias() -> None:
    with pytest.raises(ValueError, match=words("rotary", "even shared_representation_size", "7")):
        MegaModel(config(shared_representation_size=7, relative_positional_bias="rotary"))
    MegaModel(config(shared_representation_size=7, relative_positional_bias="simple"))  # fine without rotary


def test_simple_bias_chunk_longer_than_max_positions() -> None:
    with pytest.raises(ValueError, match=words("chunk_size=64", "max_positions=32")):
        MegaModel(config(relative_positional_bias="simple", use_chunking=True, chunk_size=64))


def test_question_answering_needs_two_labels() -> None:
    with pytest.raises(ValueError, match=words("num_labels=2", "3")):
        MegaForQuestionAnswering(config(num_labels=3))


def cross_decoder(**overrides: Any) -> MegaModel:
    values: dict[str, Any] = dict(is_decoder=True, bidirectional=False, add_cross_attention=True)
    values.update(overrides)
    return MegaModel(config(**values)).eval()


def test_cross_attention_needs_a_decoder() -> None:
    with pytest.raises(ValueError, match=words("add_cross_attention=True", "is_decoder=True", "bidirectional=False")):
        MegaModel(config(add_cross_attention=True))


@pytest.mark.parametrize("given", ["encoder_hidden_states", "encoder_attention_mask"])
def test_encoder_inputs_without_cross_attention(given: str) -> None:
    model = MegaModel(config(is_decoder=True, bidirectional=False)).eval()
    inputs = {"encoder_hidden_states": torch.randn(2, 5, 16), "encoder_attention_mask": torch.ones(2, 5)}
    with pytest.raises(ValueError, match=words(given, "add_cross_attention=True")):
        model(input_ids=torch.full((2, 4), 5), **{given: inputs[given]})


def test_cross_attention_needs_encoder_states() -> None:
    with pytest.raises(ValueError, match=words("add_cross_attention=True", "encoder_hidden_states")):
        cross_decoder()(input_ids=torch.full((2, 4), 5))


@pytest.mark.parametrize(
    "shape",
    [pytest.param((3, 5, 16), id="batch"), pytest.param((2, 5, 12), id="hidden"), pytest.param((2, 5), id="2d")],
)
def test_encoder_states_of_the_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=words("encoder_hidden_states", str(shape), "(2, source_length, 16)")):
        cross_decoder()(input_ids=torch.full((2, 4), 5), encoder_hidden_states=torch.randn(shape))


@pytest.mark.parametrize("shape", [(2, 6), (3, 5), (2, 1, 1, 5)], ids=["length", "batch", "4d"])
def test_encoder_mask_of_the_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=words("encoder_attention_mask", str(shape), "(2, 5)")):
        cross_decoder()(
            input_ids=torch.full((2, 4), 5),
            encoder_hidden_states=torch.randn(2, 5, 16),
            encoder_attention_mask=torch.ones(shape),
        )


def test_cross_attention_simple_bias_limit() -> None:
    model = cross_decoder(relative_positional_bias="simple", max_positions=32)
    model(input_ids=torch.full((1, 32), 5), encoder_hidden_states=torch.randn(1, 32, 16))  # the limit is fine
    with pytest.raises(ValueError, match=words("cross-attention", "simple", "32", "encoder length 33", "rotary")):
        model(input_ids=torch.full((1, 4), 5), encoder_hidden_states=torch.randn(1, 33, 16))


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def test_sequence_longer_than_simple_bias_without_chunking() -> None:
    model = MegaModel(config(relative_positional_bias="simple", max_positions=32)).eval()
    model(input_ids=torch.full((1, 32), 5))  # exactly max_positions is fine
    with pytest.raises(ValueError, match=words("sequence length 33", "32", "max_positions")):
        model(input_ids=torch.full((1, 33), 5))


def test_rotary_bias_has_no_length_limit() -> None:
    model = MegaModel(config(relative_positional_bias="rotary", max_positions=32)).eval()
    assert model(input_ids=torch.full((1, 40), 5)).last_hidden_state.shape == (1, 40, TINY["hidden_size"])


@pytest.mark.parametrize("width", [8, 17])
def test_inputs_embeds_with_the_wrong_hidden_size(width: int) -> None:
    model = MegaModel(config()).eval()
    with pytest.raises(ValueError, match=words("inputs_embeds", f"hidden_size={TINY['hidden_size']}", str(width))):
        model(inputs_embeds=torch.randn(2, 5, width))


def test_inputs_embeds_with_the_wrong_rank() -> None:
    with pytest.raises(ValueError, match=words("inputs_embeds", "(batch, length, hidden_size")):
        MegaModel(config()).eval()(inputs_embeds=torch.randn(5, TINY["hidden_size"]))


@pytest.mark.parametrize("bad", [60, 61, -1])
def test_input_ids_out_of_vocabulary(bad: int) -> None:
    model = MegaModel(config()).eval()
    input_ids = torch.full((2, 6), 5)
    input_ids[1, 3] = bad
    with pytest.raises(ValueError, match=words("input_ids", "vocab_size=60", str(bad))):
        model(input_ids=input_ids)


@pytest.mark.parametrize("bad", [2, 5, -1])
def test_token_type_ids_out_of_range(bad: int) -> None:
    model = MegaModel(config(add_token_type_embeddings=True, type_vocab_size=2)).eval()
    token_type_ids = torch.zeros(2, 6, dtype=torch.long)
    token_type_ids[0, 2] = bad
    with pytest.raises(ValueError, match=words("token_type_ids", "type_vocab_size=2", str(bad))):
        model(input_ids=torch.full((2, 6), 5), token_type_ids=token_type_ids)


def test_token_type_ids_without_token_type_embeddings() -> None:
    model = MegaModel(config(add_token_type_embeddings=False)).eval()
    model(input_ids=torch.full((1, 4), 5), token_type_ids=torch.zeros(1, 4, dtype=torch.long))  # zeros are fine
    with pytest.raises(ValueError, match=words("token_type_ids", "add_token_type_embeddings=False")):
        model(input_ids=torch.full((1, 4), 5), token_type_ids=torch.ones(1, 4, dtype=torch.long))


def test_attention_mask_with_the_wrong_shape() -> None:
    model = MegaModel(config()).eval()
    with pytest.raises(ValueError, match=words("attention_mask", "(2, 6)")):
        model(input_ids=torch.full((2, 6), 5), attention_mask=torch.ones(2, 7, dtype=torch.long))


def test_both_or_neither_of_input_ids_and_inputs_embeds() -> None:
    model = MegaModel(config()).eval()
    with pytest.raises(ValueError, match=words("input_ids", "inputs_embeds")):
        model(input_ids=torch.full((1, 4), 5), inputs_embeds=torch.randn(1, 4, TINY["hidden_size"]))
    with pytest.raises(ValueError, match=words("input_ids", "inputs_embeds")):
        model()


def test_multiple_choice_needs_a_choice_axis() -> None:
    model = MegaForMultipleChoice(config()).eval()
    with pytest.raises(ValueError, match=words("input_ids", "3 dims")):
        model(input_ids=torch.full((2, 6), 5))


def test_unknown_problem_type() -> None:
    model = MegaForSequenceClassification(config(num_labels=3)).eval()
    model.config.problem_type = "ranking"
    with pytest.raises(ValueError, match=words("problem_type", "ranking", "regression", "single_label_classification")):
        model(input_ids=torch.full((2, 6), 5), labels=torch.tensor([0, 1]))
