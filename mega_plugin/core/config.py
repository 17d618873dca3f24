"""The backend-neutral MEGA configuration.

Field names and defaults follow the Hugging Face ``MegaConfig`` written by transformers
4.40-4.57, so checkpoints' ``config.json`` files translate one-to-one. Adapters build a
:class:`MegaCoreConfig` from their own config objects; the core reads nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final, Mapping

from .config_checks import ACTIVATIONS, ATTENTION_ACTIVATIONS, NORMALIZATION_TYPES, RELATIVE_POSITIONAL_BIASES
from .config_checks import boolean_fields, validate_config
from .config_lm import LanguageModelOptions, validate_language_model_options
from .config_lra import LraOptions, validate_lra_options


@dataclass
class MegaCoreConfig(LanguageModelOptions, LraOptions):
    """Every architectural option of MEGA, with the reference's defaults (the original language
    models' options come from :class:`~.config_lm.LanguageModelOptions`, the original LRA models'
    input and head options from :class:`~.config_lra.LraOptions`)."""

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

    scale_embeddings: bool = False
    """Multiply the token embeddings by ``sqrt(hidden_size)`` before the first layer, as the
    original fairseq MEGA models do (translation encoders and decoders, language models) unless
    trained with ``--no-scale-embedding``. Applied in the model, so the stored table is the
    original's and fp16/bf16 tables are not rounded twice. ``False`` is the HF layout."""

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

    cross_attention_max_positions: int | None = None
    """Size n of the cross-attention's simple bias table (2n - 1 entries, lag 0 at n) when it is
    not the self-attention's: the original translation models size it by
    max(max_source_positions, max_target_positions) whatever the chunking. ``None`` (the HF
    layout): the self-attention's size and centre."""

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
        validate_language_model_options(self)
        validate_lra_options(self)

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


BOOLEAN_FIELDS: Final = boolean_fields(MegaCoreConfig)
"""The on/off options of :class:`MegaCoreConfig`."""

__all__ = [
    "ACTIVATIONS",
    "ATTENTION_ACTIVATIONS",
    "BOOLEAN_FIELDS",
    "NORMALIZATION_TYPES",
    "RELATIVE_POSITIONAL_BIASES",
    "MegaCoreConfig",
    "validate_config",
]
