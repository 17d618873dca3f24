"""Validation of :class:`~.config.MegaCoreConfig`: the allowed values, and one clear error per bad option."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .config import MegaCoreConfig

NORMALIZATION_TYPES: Final = ("scalenorm", "layernorm", "rmsnorm", "batchnorm", "syncbatchnorm")
ACTIVATIONS: Final = ("silu", "relu", "linear", "gelu", "gelu_accurate")
ATTENTION_ACTIVATIONS: Final = ("softmax", "laplace", "relu2")
RELATIVE_POSITIONAL_BIASES: Final = ("simple", "rotary")


def boolean_fields(config: Any) -> tuple[str, ...]:
    """The on/off options of a config dataclass (annotated ``bool``; annotations are strings here)."""
    return tuple(entry.name for entry in dataclasses.fields(config) if entry.type == "bool")


def _choice_error(field_name: str, value: object, allowed: tuple[str, ...]) -> ValueError:
    return ValueError(f"{field_name}={value!r} is not supported; allowed values: {', '.join(allowed)}")


def _check_positive_int(config: MegaCoreConfig, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_probability(config: MegaCoreConfig, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_bool(config: MegaCoreConfig, name: str) -> None:
    # A config.json string such as "false" is truthy: accepting it would silently flip the option.
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")


def validate_config(config: MegaCoreConfig) -> None:
    """Raise ``ValueError`` naming the field and the allowed values for any bad option."""
    for name in boolean_fields(config):
        _check_bool(config, name)
    for name in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "ema_projection_size",
        "shared_representation_size",
        "nffn_hidden_size",
        "max_positions",
        "type_vocab_size",
    ):
        _check_positive_int(config, name)
    for name in (
        "dropout_prob",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "nffn_activation_dropout_prob",
    ):
        _check_probability(config, name)
    if config.normalization_type not in NORMALIZATION_TYPES:
        raise _choice_error("normalization_type", config.normalization_type, NORMALIZATION_TYPES)
    if config.activation not in ACTIVATIONS:
        raise _choice_error("activation", config.activation, ACTIVATIONS)
    if config.attention_activation not in ATTENTION_ACTIVATIONS:
        raise _choice_error("attention_activation", config.attention_activation, ATTENTION_ACTIVATIONS)
    if config.relative_positional_bias not in RELATIVE_POSITIONAL_BIASES:
        raise _choice_error(
            "relative_positional_bias", config.relative_positional_bias, RELATIVE_POSITIONAL_BIASES
        )
    if config.use_chunking and (
        isinstance(config.chunk_size, bool) or not isinstance(config.chunk_size, int) or config.chunk_size <= 0
    ):
        raise ValueError(
            f"chunk_size must be a positive integer when use_chunking=True, got {config.chunk_size!r}"
        )
    if config.truncation is not None and (
        isinstance(config.truncation, bool) or not isinstance(config.truncation, int) or config.truncation <= 0
    ):
        raise ValueError(f"truncation must be None or a positive integer, got {config.truncation!r}")
    cross_positions = config.cross_attention_max_positions
    if cross_positions is not None and (
        isinstance(cross_positions, bool) or not isinstance(cross_positions, int) or cross_positions <= 0
    ):
        raise ValueError(f"cross_attention_max_positions must be None or a positive integer, got {cross_positions!r}")
    if config.relative_positional_bias == "rotary" and config.shared_representation_size % 2 != 0:
        raise ValueError(
            "relative_positional_bias='rotary' needs an even shared_representation_size, "
            f"got {config.shared_representation_size}"
        )
    if config.relative_positional_bias == "simple" and config.simple_bias_center > config.max_positions:
        raise ValueError(
            f"chunk_size={config.chunk_size} exceeds max_positions={config.max_positions}: the simple "
            "relative bias table (2 * max_positions - 1 entries) cannot cover a chunk that long"
        )
    if config.is_decoder and config.bidirectional:
        raise ValueError(
            "is_decoder=True needs a causal EMA: set bidirectional=False "
            "(a bidirectional EMA reads future tokens)"
        )
    if isinstance(config.norm_eps, bool) or not isinstance(config.norm_eps, (int, float)) or config.norm_eps <= 0:
        raise ValueError(f"norm_eps must be positive, got {config.norm_eps!r}")
