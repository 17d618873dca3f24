"""The original Long Range Arena (LRA) models' input and head options.

:class:`LraOptions` is a base of :class:`~.config.MegaCoreConfig` (its fields are core fields
like any other). Every default keeps the Hugging Face layout: token ids in, the first-token
``dense`` + tanh classifier out, so a config without these keys builds what it always built.

The original LRA model (facebookresearch/mega ``fairseq/models/lra``) embeds token ids
(ListOps, Text, Retrieval) or real numbers (Image, Pathfinder, Path-X pixels: ``x * w + b``),
pools the last hidden state into one vector per sequence (``sen_rep_type``: ``cls`` = first
token, ``mp`` = mean over the real tokens), concatenates the two vectors of a retrieval pair,
and scores them with ``classifier_layers`` linear + activation layers and a bias-free output
projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

INPUT_TYPES: Final = ("tokens", "real_numbers")
CLASSIFIER_STYLES: Final = ("hf", "lra")
CLASSIFIER_POOLINGS: Final = ("first", "mean")
CLASSIFIER_ACTIVATIONS: Final = ("silu", "relu", "linear", "gelu", "gelu_accurate", "tanh")


@dataclass
class LraOptions:
    """Options of the original facebookresearch/mega LRA classifiers."""

    input_type: str = "tokens"
    """``tokens``: ids through ``word_embeddings`` (the HF layout). ``real_numbers``: one float per
    position (a pixel), embedded as ``x * weight + bias`` (``embedding_layer.real_number_embeddings``),
    as the original Image, Pathfinder and Path-X models (``--input-type image``) do."""

    normalize_embeddings: bool = False
    """Normalise the input embeddings (type ``normalization_type``) before the first layer, as the
    original LRA encoder's ``--normalize-embedding`` does (post-norm stacks only there);
    ``embedding_layer.embedding_norm`` in checkpoints. ``False``: the HF layout."""

    embedding_dropout_prob: float = 0.0
    """Dropout on the input embeddings before the first layer (the original LRA encoder's
    ``embedding_dropout``, its ``--dropout``); ``0.0``: none, the HF layout. Training only."""

    classifier_style: str = "hf"
    """``hf``: the HF head (first token, dropout, ``dense`` + tanh, dropout, ``out_proj``).
    ``lra``: the original LRA head (``classifier_pooling``, ``classifier_layers`` linear +
    ``classifier_activation`` layers, bias-free ``out_proj``)."""

    classifier_pooling: str = "first"
    """How the ``lra`` head summarises a sequence: ``first`` (the original ``sen_rep_type=cls``)
    or ``mean`` over the real tokens of the attention mask (``sen_rep_type=mp``). The ``hf``
    head always reads the first token."""

    classifier_layers: int = 1
    """Number of linear + activation layers of the ``lra`` head before ``out_proj`` (0 allowed)."""

    classifier_hidden_size: int | None = None
    """Width of the ``lra`` head's layers (the original ``classifier_out_dim``); ``None``: ``hidden_size``."""

    classifier_activation: str = "gelu"
    """Activation after each ``lra`` head layer (the original ``classifier_activation_fn``)."""

    classifier_dual_input: bool = False
    """The ``lra`` head scores a pair of sequences (LRA Retrieval): both are encoded by the same
    backbone, pooled, and concatenated as [second, first] (the original's order) before the layers."""

    @property
    def classifier_width(self) -> int:
        """The ``lra`` head's layer width: ``classifier_hidden_size`` or ``hidden_size``."""
        width = self.classifier_hidden_size
        return width if width is not None else self.hidden_size  # type: ignore[attr-defined]


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values: {', '.join(allowed)}")


def validate_lra_options(config: Any) -> None:
    """Raise ``ValueError`` naming the field and the allowed values for a bad LRA option."""
    _choice("input_type", config.input_type, INPUT_TYPES)
    _choice("classifier_style", config.classifier_style, CLASSIFIER_STYLES)
    _choice("classifier_pooling", config.classifier_pooling, CLASSIFIER_POOLINGS)
    _choice("classifier_activation", config.classifier_activation, CLASSIFIER_ACTIVATIONS)
    rate = config.embedding_dropout_prob
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"embedding_dropout_prob must be a probability in [0, 1], got {rate!r}")
    layers = config.classifier_layers
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
        raise ValueError(f"classifier_layers must be a non-negative integer, got {layers!r}")
    width = config.classifier_hidden_size
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width <= 0):
        raise ValueError(f"classifier_hidden_size must be None or a positive integer, got {width!r}")
    for name in ("classifier_dual_input", "normalize_embeddings"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be true or false, got {getattr(config, name)!r}")
    if config.classifier_style == "hf":
        lra_only = {
            "classifier_pooling": ("first", config.classifier_pooling),
            "classifier_dual_input": (False, config.classifier_dual_input),
        }
        for name, (default, value) in lra_only.items():
            if value != default:
                raise ValueError(
                    f"{name}={value!r} needs classifier_style='lra' (the HF head reads the first token of one "
                    f"sequence); allowed values with classifier_style='hf': {default!r}"
                )
