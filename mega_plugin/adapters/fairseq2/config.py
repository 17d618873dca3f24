"""``MegaLMConfig``: the fairseq2 configuration of a causal MEGA language model.

Field names follow :class:`mega_plugin.core.MegaCoreConfig` (and so the HF ``config.json``)
wherever the meaning is the same, so asset cards can copy values from a checkpoint's
config.json. The causal fields (``is_decoder``, ``bidirectional``) are fixed: this family only
builds decoders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final, Mapping

from ...core.config import MegaCoreConfig

MEGA_FAMILY: Final = "mega"
"""Name of the fairseq2 model family."""

# Core fields a causal LM config carries over unchanged (same name, same meaning).
SHARED_FIELDS: Final = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "ema_projection_size",
    "shared_representation_size",
    "use_chunking",
    "chunk_size",
    "truncation",
    "normalize_before_mega",
    "normalization_type",
    "norm_affine",
    "activation",
    "attention_activation",
    "dropout_prob",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "use_feature_dropout",
    "use_normalized_ffn",
    "nffn_hidden_size",
    "normalize_before_ffn",
    "nffn_activation_dropout_prob",
    "max_positions",
    "add_token_type_embeddings",
    "type_vocab_size",
    "relative_positional_bias",
    "initializer_range",
    "ema_delta_alpha_range",
    "ema_beta_range",
    "ema_gamma_omega_range",
    "ema_kernel",
    "attention_kernel",
    "norm_eps",
)


@dataclass(kw_only=True)
class MegaLMConfig:
    """A causal MEGA language model (decoder-only, causal EMA, causal attention)."""

    vocab_size: int = 32000
    """Size of the token table (and of the output projection)."""

    hidden_size: int = 512
    """Model width ``D``."""

    num_hidden_layers: int = 12
    """Number of MEGA blocks."""

    intermediate_size: int = 1024
    """Width ``V`` of the attention values and of the reset gate."""

    ema_projection_size: int = 16
    """EMA dimension ``N``."""

    shared_representation_size: int = 128
    """Width ``Z`` of the shared query/key representation."""

    use_chunking: bool = True
    """Mega-chunk: restrict attention to blocks of ``chunk_size`` tokens."""

    chunk_size: int = 1024
    """Chunk length when ``use_chunking`` is on."""

    truncation: int | None = None
    """If set, the EMA kernel is truncated to this many lags."""

    normalize_before_mega: bool = True
    """Pre-norm (``True``) or post-norm for the gated attention."""

    normalization_type: str = "layernorm"
    """``scalenorm``, ``layernorm``, ``rmsnorm``, ``batchnorm`` or ``syncbatchnorm``."""

    norm_affine: bool = True
    """Learn the norms' affine parameters."""

    activation: str = "silu"
    """Activation of the value path, the output and the NFFN."""

    attention_activation: str = "softmax"
    """``softmax``, ``laplace`` or ``relu2``."""

    dropout_prob: float = 0.1
    """Dropout on the EMA output and the sub-layer outputs."""

    hidden_dropout_prob: float = 0.1
    """Dropout on the attention values."""

    attention_probs_dropout_prob: float = 0.1
    """Dropout on the attention weights."""

    use_feature_dropout: bool = False
    """Drop whole features instead of single activations."""

    use_normalized_ffn: bool = True
    """Add the normalized feed-forward sub-layer after the gated attention."""

    nffn_hidden_size: int = 1024
    """Hidden width of the NFFN."""

    normalize_before_ffn: bool = True
    """Pre-norm (``True``) or post-norm for the NFFN."""

    nffn_activation_dropout_prob: float = 0.1
    """Dropout after the NFFN activation."""

    max_positions: int = 8192
    """Longest sequence (or chunk) the simple relative bias supports."""

    add_token_type_embeddings: bool = False
    """Add the type-0 token-type embedding to every token (HF checkpoints that have one)."""

    type_vocab_size: int = 2
    """Rows of the token-type table when ``add_token_type_embeddings`` is on."""

    relative_positional_bias: str = "rotary"
    """``rotary`` or ``simple``."""

    initializer_range: float = 0.02
    """Std of the normal initialisation of linear layers and embeddings."""

    ema_delta_alpha_range: float = 0.2
    """Std of the EMA damping and decay initialisation."""

    ema_beta_range: float = 0.02
    """Std of the EMA expansion-matrix initialisation."""

    ema_gamma_omega_range: float = 1.0
    """Std of the EMA projection and residual-weight initialisation."""

    ema_kernel: str = "auto"
    """EMA kernel name (``auto`` picks the best available)."""

    attention_kernel: str = "auto"
    """Attention kernel name (``auto`` picks the best available)."""

    norm_eps: float = 1e-5
    """Epsilon of every norm."""

    max_seq_len: int = 4096
    """Longest sequence the generators may produce (MEGA itself has no hard limit)."""

    pad_idx: int | None = 1
    """Padding token id: its embedding row starts at zero and the loss ignores it."""

    add_lm_hidden_dense_layer: bool = True
    """Apply ``tanh(dense(h))`` before the output projection (HF ``add_lm_hidden_dense_layer``)."""

    tie_embeddings: bool = True
    """Share the output projection's weight with the token embedding (HF ``tie_word_embeddings``)."""

    def to_core(self) -> MegaCoreConfig:
        """The backend-neutral config of the decoder (validates every field)."""
        self.validate_lm_fields()
        values = {name: getattr(self, name) for name in SHARED_FIELDS}
        return MegaCoreConfig(
            **values, bidirectional=False, is_decoder=True, add_cross_attention=False, pad_token_id=self.pad_idx
        )

    def validate_lm_fields(self) -> None:
        """Raise ``ValueError`` naming the field for a bad LM-only field (the core checks the rest)."""
        if isinstance(self.max_seq_len, bool) or not isinstance(self.max_seq_len, int) or self.max_seq_len <= 0:
            raise ValueError(f"max_seq_len must be a positive integer, got {self.max_seq_len!r}")
        pad = self.pad_idx
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size):
            raise ValueError(f"pad_idx must be None or an integer in [0, vocab_size={self.vocab_size}), got {pad!r}")
        for name in ("add_lm_hidden_dense_layer", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_core(cls, core: MegaCoreConfig, **overrides: Any) -> "MegaLMConfig":
        """The LM config of a core config (a preset); refuses encoder configs."""
        if core.bidirectional or not core.is_decoder:
            raise ValueError(
                "a MEGA causal LM needs is_decoder=True and bidirectional=False; "
                f"got is_decoder={core.is_decoder}, bidirectional={core.bidirectional}"
            )
        values: dict[str, Any] = {name: getattr(core, name) for name in SHARED_FIELDS}
        values["pad_idx"] = core.pad_token_id
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> "MegaLMConfig":
        """The LM config of an HF MEGA ``config.json`` dict (missing keys take the HF defaults)."""
        core = MegaCoreConfig.from_mapping({k: v for k, v in hf.items() if not k.startswith("_")})
        if core.bidirectional or not core.is_decoder:
            raise ValueError(
                "the HF config is not a causal MEGA (needs is_decoder=true and bidirectional=false); "
                f"got is_decoder={core.is_decoder}, bidirectional={core.bidirectional}"
            )
        if hf.get("add_cross_attention"):
            raise ValueError("add_cross_attention=true (encoder-decoder MEGA) has no fairseq2 CausalLM form")
        values: dict[str, Any] = {name: getattr(core, name) for name in SHARED_FIELDS}
        values["pad_idx"] = core.pad_token_id
        values["add_lm_hidden_dense_layer"] = bool(hf.get("add_lm_hidden_dense_layer", True))
        values["tie_embeddings"] = bool(hf.get("tie_word_embeddings", True))
        return cls(**values)

    def to_hf_config(self) -> dict[str, Any]:
        """The HF ``config.json`` dict of this model (``MegaForCausalLM``), via the shared HF layout."""
        from ...registry.hf_layout import ARCHITECTURE_CAUSAL_LM, hf_config_dict

        return hf_config_dict(
            self.to_core(),
            architectures=[ARCHITECTURE_CAUSAL_LM],
            add_lm_hidden_dense_layer=self.add_lm_hidden_dense_layer,
            tie_word_embeddings=self.tie_embeddings,
        )


def config_values(config: MegaLMConfig) -> dict[str, Any]:
    """Every field of ``config`` as a plain dict (for asset cards)."""
    return dataclasses.asdict(config)
