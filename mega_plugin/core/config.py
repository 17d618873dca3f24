"""The backend-neutral MEGA configuration.

Field names and defaults follow the Hugging Face ``MegaConfig`` written by transformers
4.40-4.57, so checkpoints' ``config.json`` files translate one-to-one. Adapters build a
:class:`MegaCoreConfig` from their own config objects; the core reads nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final, Mapping

NORMALIZATION_TYPES: Final = ("scalenorm", "layernorm", "rmsnorm", "batchnorm", "syncbatchnorm")
ACTIVATIONS: Final = ("silu", "relu", "linear", "gelu", "gelu_accurate")
ATTENTION_ACTIVATIONS: Final = ("softmax", "laplace", "relu2")
RELATIVE_POSITIONAL_BIASES: Final = ("simple", "rotary")


@dataclass
class MegaCoreConfig:
    """Every architectural option of MEGA, with the reference's defaults."""

    vocab_size: int = 30522
    """Number of token ids the word embedding covers."""

    hidden_size: int = 128
    """Model width ``D``: the embedding, EMA and residual stream size."""

    num_hidden_layers: int = 4
    """Number of MEGA blocks."""

    intermediate_size: int = 256
    """Width ``V`` of the attention values (``v_proj``) and of the reset gate."""

    ema_projection_size: int = 16
    """EMA dimension ``N``: the number of damped EMA components per channel."""

    bidirectional: bool = True
    """Run the EMA in both directions (encoders); must be ``False`` for decoders."""

    shared_representation_size: int = 64
    """Width ``Z`` of the shared query/key representation."""

    use_chunking: bool = False
    """Mega-chunk: restrict attention to blocks of ``chunk_size`` tokens."""

    chunk_size: int = -1
    """Chunk length when ``use_chunking`` is on; any length works (we pad internally)."""

    truncation: int | None = None
    """If set, the EMA kernel is truncated to this many lags."""

    normalize_before_mega: bool = True
    """Pre-norm (``True``) or post-norm (``False``) for the gated attention sub-layer."""

    normalization_type: str = "scalenorm"
    """One of ``scalenorm``, ``layernorm``, ``rmsnorm``, ``batchnorm``, ``syncbatchnorm``."""

    norm_affine: bool = True
    """Learn the norms' affine parameters."""

    activation: str = "silu"
    """Activation of the value path, the output and the NFFN: ``silu``, ``relu``, ``linear``,
    ``gelu`` or ``gelu_accurate``."""

    attention_activation: str = "softmax"
    """Attention function: ``softmax``, ``laplace`` or ``relu2``."""

    dropout_prob: float = 0.1
    """Dropout on the EMA output and on the sub-layer outputs."""

    hidden_dropout_prob: float = 0.1
    """Dropout on the attention values (and the embeddings in the heads)."""

    attention_probs_dropout_prob: float = 0.1
    """Dropout on the attention weights."""

    use_feature_dropout: bool = False
    """Drop whole features (per sequence) instead of single activations."""

    use_normalized_ffn: bool = True
    """Add the normalized feed-forward sub-layer (NFFN) after the gated attention."""

    nffn_hidden_size: int = 256
    """Hidden width of the NFFN."""

    normalize_before_ffn: bool = True
    """Pre-norm (``True``) or post-norm (``False``) for the NFFN."""

    nffn_activation_dropout_prob: float = 0.1
    """Dropout after the NFFN activation."""

    max_positions: int = 2048
    """Longest sequence (or chunk) the simple relative bias supports; sizes its table."""

    add_token_type_embeddings: bool = False
    """Add token-type embeddings (``False`` as in the code that wrote the checkpoints)."""

    type_vocab_size: int = 2
    """Number of token types when ``add_token_type_embeddings`` is on."""

    relative_positional_bias: str = "rotary"
    """``rotary`` or ``simple``."""

    pad_token_id: int | None = 1
    """Padding id; its embedding row is kept at zero at initialisation."""

    is_decoder: bool = False
    """Causal self-attention (requires ``bidirectional=False``)."""

    add_cross_attention: bool = False
    """Adds gated cross-attention (``cross_attn``) after the self-attention, for the decoder of an
    encoder-decoder model; needs ``is_decoder=True`` (checked when the block is built, as the reference
    does, so HF can still flip the flags on a loaded config before building)."""

    initializer_range: float = 0.02
    """Std of the normal initialisation of linear layers, embeddings and biases."""

    ema_delta_alpha_range: float = 0.2
    """Std of the EMA damping and decay initialisation."""

    ema_beta_range: float = 0.02
    """Std of the EMA expansion-matrix initialisation (around +-1)."""

    ema_gamma_omega_range: float = 1.0
    """Std of the EMA projection and residual-weight initialisation."""

    ema_kernel: str = "auto"
    """Name of the EMA kernel (see the kernel registry); ``auto`` picks the best available."""

    attention_kernel: str = "auto"
    """Name of the attention kernel; ``auto`` picks the best available."""

    norm_eps: float = 1e-5
    """Epsilon of every norm (the reference's value)."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Unused keys an adapter passed along (kept, never silently dropped)."""

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def ema_channels(self) -> int:
        """Rows of the EMA parameters: ``2 * hidden_size`` when bidirectional."""
        return 2 * self.hidden_size if self.bidirectional else self.hidden_size

    @property
    def attention_chunk(self) -> int | None:
        """The chunk length attention is restricted to, or ``None`` for global attention."""
        return self.chunk_size if self.use_chunking else None

    @property
    def simple_bias_center(self) -> int:
        """Where lag 0 sits in the simple bias table (the HF layout centres on ``chunk_size``)."""
        return self.chunk_size if self.chunk_size > 0 else self.max_positions

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "MegaCoreConfig":
        """Build from any mapping (a ``config.json`` dict), keeping unknown keys in ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        unknown = {k: v for k, v in values.items() if k not in names}
        return cls(**known, extra=unknown)


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


BOOLEAN_FIELDS: Final = tuple(entry.name for entry in dataclasses.fields(MegaCoreConfig) if entry.type == "bool")
"""The on/off options (annotated ``bool``; annotations are strings under ``from __future__``)."""


def _check_bool(config: MegaCoreConfig, name: str) -> None:
    # A config.json string such as "false" is truthy: accepting it would silently flip the option.
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")


def validate_config(config: MegaCoreConfig) -> None:
    """Raise ``ValueError`` naming the field and the allowed values for any bad option."""
    for name in BOOLEAN_FIELDS:
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
