"""``MegaConfig`` for transformers 4.57.x and 5.x (model_type ``"mega"``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from transformers import PretrainedConfig

from ...core.config import MegaCoreConfig

_CORE_FIELDS: Final = tuple(
    f.name for f in dataclasses.fields(MegaCoreConfig) if f.name not in ("extra", "norm_eps")
)
"""The core fields ``MegaConfig`` carries (``norm_eps`` is fixed in the HF layout, ``extra`` is not a field)."""

CORE: Final = MegaCoreConfig()
"""The core config with its defaults: the single source of every architectural default below."""


class MegaConfig(PretrainedConfig):
    """Configuration of a MEGA model, field for field the reference ``MegaConfig``.

    The architectural fields and their defaults are those of :class:`MegaCoreConfig` (each
    default below reads the core's; a test pins the two, field by field), which follow
    transformers 4.40-4.57 (``mnaylor/mega-base-wikitext``-like). One default differs from the
    seed document: ``add_token_type_embeddings`` is ``False``, as in the code that wrote every
    public checkpoint, so a config.json without the key loads as it did there. Two fields are
    ours: ``ema_kernel`` and ``attention_kernel`` name the kernels (``"auto"`` picks the best
    available; see ``mega-plugin info``). The original LRA models' options (``input_type``, ``embedding_dropout_prob``,
    ``classifier_style``, ``classifier_pooling``, ``classifier_layers``, ``classifier_hidden_size``,
    ``classifier_activation``, ``classifier_dual_input``; see
    :class:`mega_plugin.core.config_lra.LraOptions`) and the original language models' options
    (``add_final_norm``, ``final_norm_affine``, ``adaptive_input_*``, ``adaptive_softmax_*``,
    ``tie_adaptive_*``; see :class:`mega_plugin.core.config_lm.LanguageModelOptions`) are ours too,
    off by default. The HF-only fields (token ids, ``classifier_dropout``,
    ``use_cache``, ``add_lm_hidden_dense_layer``, ``tie_word_embeddings``) are declared here.
    The architecture is validated when a model is built (:meth:`to_core`).
    """

    model_type = "mega"

    def __init__(
        self,
        vocab_size: int = CORE.vocab_size,
        hidden_size: int = CORE.hidden_size,
        num_hidden_layers: int = CORE.num_hidden_layers,
        intermediate_size: int = CORE.intermediate_size,
        ema_projection_size: int = CORE.ema_projection_size,
        bidirectional: bool = CORE.bidirectional,
        shared_representation_size: int = CORE.shared_representation_size,
        use_chunking: bool = CORE.use_chunking,
        chunk_size: int = CORE.chunk_size,
        truncation: int | None = CORE.truncation,
        normalize_before_mega: bool = CORE.normalize_before_mega,
        normalization_type: str = CORE.normalization_type,
        norm_affine: bool = CORE.norm_affine,
        activation: str = CORE.activation,
        attention_activation: str = CORE.attention_activation,
        dropout_prob: float = CORE.dropout_prob,
        hidden_dropout_prob: float = CORE.hidden_dropout_prob,
        attention_probs_dropout_prob: float = CORE.attention_probs_dropout_prob,
        use_feature_dropout: bool = CORE.use_feature_dropout,
        use_normalized_ffn: bool = CORE.use_normalized_ffn,
        nffn_hidden_size: int = CORE.nffn_hidden_size,
        normalize_before_ffn: bool = CORE.normalize_before_ffn,
        nffn_activation_dropout_prob: float = CORE.nffn_activation_dropout_prob,
        max_positions: int = CORE.max_positions,
        add_token_type_embeddings: bool = CORE.add_token_type_embeddings,
        type_vocab_size: int = CORE.type_vocab_size,
        initializer_range: float = CORE.initializer_range,
        ema_delta_alpha_range: float = CORE.ema_delta_alpha_range,
        ema_beta_range: float = CORE.ema_beta_range,
        ema_gamma_omega_range: float = CORE.ema_gamma_omega_range,
        pad_token_id: int | None = CORE.pad_token_id,
        bos_token_id: int | None = 0,
        eos_token_id: int | None = 2,
        relative_positional_bias: str = CORE.relative_positional_bias,
        classifier_dropout: float | None = None,
        use_cache: bool = True,
        add_lm_hidden_dense_layer: bool = True,
        is_decoder: bool = CORE.is_decoder,
        add_cross_attention: bool = CORE.add_cross_attention,
        tie_word_embeddings: bool = True,
        ema_kernel: str = CORE.ema_kernel,
        attention_kernel: str = CORE.attention_kernel,
        scale_embeddings: bool = CORE.scale_embeddings,
        cross_attention_max_positions: int | None = CORE.cross_attention_max_positions,
        add_final_norm: bool = CORE.add_final_norm,
        final_norm_affine: bool = CORE.final_norm_affine,
        input_type: str = CORE.input_type,
        embedding_dropout_prob: float = CORE.embedding_dropout_prob,
        normalize_embeddings: bool = CORE.normalize_embeddings,
        classifier_style: str = CORE.classifier_style,
        classifier_pooling: str = CORE.classifier_pooling,
        classifier_layers: int = CORE.classifier_layers,
        classifier_hidden_size: int | None = CORE.classifier_hidden_size,
        classifier_activation: str = CORE.classifier_activation,
        classifier_dual_input: bool = CORE.classifier_dual_input,
        adaptive_input_cutoffs: list[int] | None = CORE.adaptive_input_cutoffs,
        adaptive_input_factor: float = CORE.adaptive_input_factor,
        adaptive_softmax_cutoffs: list[int] | None = CORE.adaptive_softmax_cutoffs,
        adaptive_softmax_factor: float = CORE.adaptive_softmax_factor,
        adaptive_softmax_dropout_prob: float = CORE.adaptive_softmax_dropout_prob,
        tie_adaptive_weights: bool = CORE.tie_adaptive_weights,
        tie_adaptive_proj: bool = CORE.tie_adaptive_proj,
        **kwargs: Any,
    ) -> None:
        # The parameters follow the reference's order (positional calls keep working) and name
        # every core field, so the signature stays explicit for transformers; a core field added
        # without a parameter fails here with a KeyError naming it.
        arguments = locals()
        for name in _CORE_FIELDS:
            setattr(self, name, arguments[name])
        self.classifier_dropout = classifier_dropout
        self.use_cache = use_cache
        self.add_lm_hidden_dense_layer = add_lm_hidden_dense_layer
        # Declared here because the 5.x base config no longer defines them.
        self.tie_word_embeddings = tie_word_embeddings
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
        """The backend-neutral config the core modules are built from (validates every field,
        the HF-only ones here, the core ones in the core)."""
        for name in ("use_cache", "add_lm_hidden_dense_layer", "tie_word_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, bool):  # a config.json "false" is truthy: it would flip the option
                raise ValueError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")
        dropout = self.classifier_dropout
        if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0):
            raise ValueError(f"classifier_dropout must be null or a probability in [0, 1], got {dropout!r}")
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            ids = value if isinstance(value, (list, tuple)) and name == "eos_token_id" else [value]
            if value is not None and any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
                raise ValueError(f"{name} must be null or an integer token id (eos: or a list of them), got {value!r}")
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
