"""``MegaConfig`` for transformers 4.57.x and 5.x (model_type ``"mega"``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import PretrainedConfig

from ...core.config import MegaCoreConfig

_CORE_FIELDS = tuple(f.name for f in dataclasses.fields(MegaCoreConfig) if f.name not in ("extra", "norm_eps"))


class MegaConfig(PretrainedConfig):
    """Configuration of a MEGA model, field for field the reference ``MegaConfig``.

    Defaults reproduce transformers 4.40-4.57 (``mnaylor/mega-base-wikitext``-like). One default
    differs from the seed document: ``add_token_type_embeddings`` is ``False``, as in the code
    that wrote every public checkpoint, so a config.json without the key loads as it did there.
    Two fields are ours: ``ema_kernel`` and ``attention_kernel`` name the kernels (``"auto"``
    picks the best available; see ``mega-plugin info``). The architecture is validated when a
    model is built (see :class:`mega_plugin.core.MegaCoreConfig`).
    """

    model_type = "mega"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        intermediate_size: int = 256,
        ema_projection_size: int = 16,
        bidirectional: bool = True,
        shared_representation_size: int = 64,
        use_chunking: bool = False,
        chunk_size: int = -1,
        truncation: int | None = None,
        normalize_before_mega: bool = True,
        normalization_type: str = "scalenorm",
        norm_affine: bool = True,
        activation: str = "silu",
        attention_activation: str = "softmax",
        dropout_prob: float = 0.1,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        use_feature_dropout: bool = False,
        use_normalized_ffn: bool = True,
        nffn_hidden_size: int = 256,
        normalize_before_ffn: bool = True,
        nffn_activation_dropout_prob: float = 0.1,
        max_positions: int = 2048,
        add_token_type_embeddings: bool = False,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        ema_delta_alpha_range: float = 0.2,
        ema_beta_range: float = 0.02,
        ema_gamma_omega_range: float = 1.0,
        pad_token_id: int | None = 1,
        bos_token_id: int | None = 0,
        eos_token_id: int | None = 2,
        relative_positional_bias: str = "rotary",
        classifier_dropout: float | None = None,
        use_cache: bool = True,
        add_lm_hidden_dense_layer: bool = True,
        is_decoder: bool = False,
        add_cross_attention: bool = False,
        tie_word_embeddings: bool = True,
        ema_kernel: str = "auto",
        attention_kernel: str = "auto",
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.intermediate_size = intermediate_size
        self.ema_projection_size = ema_projection_size
        self.bidirectional = bidirectional
        self.shared_representation_size = shared_representation_size
        self.use_chunking = use_chunking
        self.chunk_size = chunk_size
        self.truncation = truncation
        self.normalize_before_mega = normalize_before_mega
        self.normalization_type = normalization_type
        self.norm_affine = norm_affine
        self.activation = activation
        self.attention_activation = attention_activation
        self.dropout_prob = dropout_prob
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.use_feature_dropout = use_feature_dropout
        self.use_normalized_ffn = use_normalized_ffn
        self.nffn_hidden_size = nffn_hidden_size
        self.normalize_before_ffn = normalize_before_ffn
        self.nffn_activation_dropout_prob = nffn_activation_dropout_prob
        self.max_positions = max_positions
        self.add_token_type_embeddings = add_token_type_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.ema_delta_alpha_range = ema_delta_alpha_range
        self.ema_beta_range = ema_beta_range
        self.ema_gamma_omega_range = ema_gamma_omega_range
        self.relative_positional_bias = relative_positional_bias
        self.classifier_dropout = classifier_dropout
        self.use_cache = use_cache
        self.add_lm_hidden_dense_layer = add_lm_hidden_dense_layer
        self.ema_kernel = ema_kernel
        self.attention_kernel = attention_kernel
        # Declared here because the 5.x base config no longer defines them.
        self.is_decoder = is_decoder
        self.add_cross_attention = add_cross_attention
        self.tie_word_embeddings = tie_word_embeddings
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.num_attention_heads = 1  # MEGA attention is single-head; some HF utilities read this.
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            is_decoder=is_decoder,
            add_cross_attention=add_cross_attention,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def to_core(self) -> MegaCoreConfig:
        """The backend-neutral config the core modules are built from (validates every field)."""
        return MegaCoreConfig(**{name: getattr(self, name) for name in _CORE_FIELDS})

    @classmethod
    def from_core(cls, core: MegaCoreConfig, **kwargs: Any) -> "MegaConfig":
        """An HF config for a core config (e.g. a preset); ``kwargs`` add HF-only fields."""
        values = {name: getattr(core, name) for name in _CORE_FIELDS}
        values.update(kwargs)
        return cls(**values)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MegaConfig":
        """An HF config for the registered preset ``name`` (built-in or from a plugin).

        ``overrides`` that are core fields (e.g. ``hidden_size``, ``ema_kernel``) are applied to
        the preset and validated; the others (e.g. ``tie_word_embeddings``) are HF-only fields.
        Unknown presets raise :class:`mega_plugin.registry.NotRegisteredError` naming the allowed ones.
        """
        from ...registry import get_preset

        core_names = {f.name for f in dataclasses.fields(MegaCoreConfig)}
        core_overrides = {key: value for key, value in overrides.items() if key in core_names}
        hf_fields = {key: value for key, value in overrides.items() if key not in core_names}
        core = get_preset(name, **core_overrides)
        if core.norm_eps != MegaCoreConfig.norm_eps:  # the HF layout has no field for it
            raise ValueError(
                f"preset {name!r}: norm_eps={core.norm_eps!r} cannot be expressed in MegaConfig "
                f"(fixed at {MegaCoreConfig.norm_eps!r})"
            )
        hf_fields = {**core.extra, **hf_fields}  # preset extras such as bos_token_id are HF-only fields
        return cls.from_core(core, **hf_fields)
