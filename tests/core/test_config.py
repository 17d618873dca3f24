"""``MegaCoreConfig`` validation: every bad option raises a ValueError naming the field and what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from mega_plugin.core import (
    ACTIVATIONS,
    ATTENTION_ACTIVATIONS,
    NORMALIZATION_TYPES,
    RELATIVE_POSITIONAL_BIASES,
    MegaCoreConfig,
)

POSITIVE_INTS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "ema_projection_size",
    "shared_representation_size",
    "nffn_hidden_size",
    "max_positions",
    "type_vocab_size",
)
PROBABILITIES = ("dropout_prob", "hidden_dropout_prob", "attention_probs_dropout_prob", "nffn_activation_dropout_prob")
CHOICES = {
    "normalization_type": NORMALIZATION_TYPES,
    "activation": ACTIVATIONS,
    "attention_activation": ATTENTION_ACTIVATIONS,
    "relative_positional_bias": RELATIVE_POSITIONAL_BIASES,
}


def error_of(**fields: Any) -> str:
    with pytest.raises(ValueError) as error:
        MegaCoreConfig(**fields)
    return str(error.value)


def test_defaults_are_valid() -> None:
    config = MegaCoreConfig()
    assert config.ema_channels == 2 * config.hidden_size
    assert config.attention_chunk is None
    assert config.add_token_type_embeddings is False


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "8"], ids=repr)
@pytest.mark.parametrize("name", POSITIVE_INTS)
def test_positive_integers(name: str, value: Any) -> None:
    message = error_of(**{name: value})
    assert name in message and "positive integer" in message


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.1"], ids=repr)
@pytest.mark.parametrize("name", PROBABILITIES)
def test_probabilities(name: str, value: Any) -> None:
    message = error_of(**{name: value})
    assert name in message and "[0, 1]" in message


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_choices_list_allowed_values(name: str) -> None:
    message = error_of(**{name: "nonsense"})
    assert name in message and "nonsense" in message
    for allowed in CHOICES[name]:
        assert allowed in message


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_every_allowed_choice_builds(name: str) -> None:
    for value in CHOICES[name]:
        MegaCoreConfig(**{name: value})


@pytest.mark.parametrize("chunk_size", [0, -1, 2.0, True], ids=repr)
def test_chunk_size_when_chunking(chunk_size: Any) -> None:
    message = error_of(use_chunking=True, chunk_size=chunk_size)
    assert "chunk_size" in message and "positive integer" in message and "use_chunking" in message
    MegaCoreConfig(use_chunking=False, chunk_size=-1)  # ignored without chunking


@pytest.mark.parametrize("truncation", [0, -2, 1.5, True], ids=repr)
def test_truncation(truncation: Any) -> None:
    message = error_of(truncation=truncation)
    assert "truncation" in message and "None or a positive integer" in message


def test_rotary_needs_even_shared_size() -> None:
    message = error_of(relative_positional_bias="rotary", shared_representation_size=7)
    assert "shared_representation_size" in message and "even" in message
    MegaCoreConfig(relative_positional_bias="simple", shared_representation_size=7)


def test_simple_bias_chunk_within_max_positions() -> None:
    message = error_of(relative_positional_bias="simple", use_chunking=True, chunk_size=64, max_positions=32)
    assert "chunk_size" in message and "max_positions" in message
    config = MegaCoreConfig(relative_positional_bias="simple", use_chunking=True, chunk_size=32, max_positions=32)
    assert config.simple_bias_center == 32


def test_decoder_needs_causal_ema() -> None:
    message = error_of(is_decoder=True, bidirectional=True)
    assert "is_decoder" in message and "bidirectional=False" in message
    assert MegaCoreConfig(is_decoder=True, bidirectional=False).ema_channels == 128


@pytest.mark.parametrize("eps", [0.0, -1e-5], ids=repr)
def test_norm_eps_positive(eps: float) -> None:
    message = error_of(norm_eps=eps)
    assert "norm_eps" in message and "positive" in message


def test_from_mapping_keeps_unknown_keys() -> None:
    values = {
        "hidden_size": 32,
        "use_chunking": True,
        "chunk_size": 8,
        "architectures": ["MegaForMaskedLM"],
        "model_type": "mega",
        "torch_dtype": "float32",
    }
    config = MegaCoreConfig.from_mapping(values)
    assert config.hidden_size == 32 and config.attention_chunk == 8
    assert config.extra == {"architectures": ["MegaForMaskedLM"], "model_type": "mega", "torch_dtype": "float32"}
    assert MegaCoreConfig.from_mapping({}).extra == {}


def test_from_mapping_validates() -> None:
    with pytest.raises(ValueError, match="attention_activation"):
        MegaCoreConfig.from_mapping({"attention_activation": "tanh", "unknown": 1})
