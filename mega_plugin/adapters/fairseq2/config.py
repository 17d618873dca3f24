"""``MegaLMConfig``: the fairseq2 configuration of a causal MEGA language model.

The architectural fields are not restated here: they are derived from
:class:`mega_plugin.core.MegaCoreConfig` (names, types, and defaults unless
:data:`LM_DEFAULTS` says otherwise), so a field added to the core appears here by itself.
fairseq2 still sees one flat dataclass (``MegaLMConfig`` inherits the derived fields), so arch
registration, asset-card ``model_config`` overrides by field name and ``fairseq2 assets show``
work as for any fairseq2 config, and the names match the HF ``config.json``. The causal fields
(``is_decoder``, ``bidirectional``, ``add_cross_attention``) are fixed: this family only builds
decoders. The LM-only fields are declared on :class:`MegaLMConfig` below.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Final, Mapping

from ...core.config import MegaCoreConfig

MEGA_FAMILY: Final = "mega"
"""Name of the fairseq2 model family."""

FIXED_CORE_FIELDS: Final[Mapping[str, Any]] = {"bidirectional": False, "is_decoder": True, "add_cross_attention": False}
"""Core fields a causal LM does not expose: always these values."""

RENAMED_CORE_FIELDS: Final[Mapping[str, str]] = {"pad_token_id": "pad_idx"}
"""Core field -> the LM field that carries it (fairseq2's name for the padding id)."""

UNCARRIED_CORE_FIELDS: Final = ("extra",)

LM_FIXED_LRA_FIELDS: Final[Mapping[str, Any]] = {
    "input_type": "tokens",
    "embedding_dropout_prob": 0.0,
    "normalize_embeddings": False,
    "classifier_style": "hf",
    "classifier_pooling": "first",
    "classifier_dual_input": False,
}
"""LRA fields (:mod:`mega_plugin.core.config_lra`) a causal LM carries only at these values."""
"""Core fields with no LM counterpart (``extra`` holds unknown config.json keys)."""

LM_DEFAULTS: Final[Mapping[str, Any]] = {
    "vocab_size": 32000,
    "hidden_size": 512,
    "num_hidden_layers": 12,
    "intermediate_size": 1024,
    "shared_representation_size": 128,
    "use_chunking": True,
    "chunk_size": 1024,
    "normalization_type": "layernorm",
    "nffn_hidden_size": 1024,
    "max_positions": 8192,
}
"""Defaults of a bare ``MegaLMConfig()`` (an asset card without ``model_arch``) where they differ
from the core's, which follow HF's encoder ``MegaConfig``: a 12 x 512 chunked causal LM."""


def _shared_field_specs() -> list[tuple[str, Any, dataclasses.Field[Any]]]:
    # (name, resolved type, field with the LM default) of every core field the LM carries as is.
    hints = typing.get_type_hints(MegaCoreConfig)
    skipped = {*FIXED_CORE_FIELDS, *RENAMED_CORE_FIELDS, *UNCARRIED_CORE_FIELDS}
    specs = []
    for core_field in dataclasses.fields(MegaCoreConfig):
        if core_field.name in skipped:
            continue
        if core_field.default is dataclasses.MISSING:
            raise TypeError(f"MegaCoreConfig.{core_field.name} has no plain default; the LM config cannot derive it")
        default = LM_DEFAULTS.get(core_field.name, core_field.default)
        specs.append((core_field.name, hints[core_field.name], dataclasses.field(default=default)))
    return specs


MegaCoreFields = dataclasses.make_dataclass("MegaCoreFields", _shared_field_specs(), kw_only=True)
MegaCoreFields.__module__ = __name__
MegaCoreFields.__doc__ = (
    "The architectural fields of :class:`MegaCoreConfig` a causal LM carries unchanged "
    "(see the core class for each field's meaning)."
)

SHARED_FIELDS: Final = tuple(field.name for field in dataclasses.fields(MegaCoreFields))
"""Core fields a causal LM config carries over unchanged (same name, same meaning)."""


@dataclass(kw_only=True)
class MegaLMConfig(MegaCoreFields):  # type: ignore[misc, valid-type]  # base built from the core's fields
    """A causal MEGA language model (decoder-only, causal EMA, causal attention)."""

    max_seq_len: int = 4096
    """Longest sequence the generators may produce (MEGA itself has no hard limit)."""

    pad_idx: int | None = MegaCoreConfig.pad_token_id
    """Padding token id (core ``pad_token_id``, whose default it takes): its embedding row starts at
    zero and the loss ignores it."""

    add_lm_hidden_dense_layer: bool = True
    """Apply ``tanh(dense(h))`` before the output projection (HF ``add_lm_hidden_dense_layer``)."""

    tie_embeddings: bool = True
    """Share the output projection's weight with the token embedding (HF ``tie_word_embeddings``)."""

    def to_core(self) -> MegaCoreConfig:
        """The backend-neutral config of the decoder (validates every field)."""
        self.validate_lm_fields()
        values = {name: getattr(self, name) for name in SHARED_FIELDS}
        renamed = {core_name: getattr(self, lm_name) for core_name, lm_name in RENAMED_CORE_FIELDS.items()}
        return MegaCoreConfig(**values, **renamed, **FIXED_CORE_FIELDS)

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
        # the LRA options belong to HF's classifiers: a causal LM embeds token ids and has no classifier
        for name, default in LM_FIXED_LRA_FIELDS.items():
            if getattr(self, name) != default:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not supported by the fairseq2 MEGA causal LM; allowed values: {default!r}"
                )
        if self.tie_embeddings and (self.adaptive_softmax_cutoffs is not None or self.adaptive_input_cutoffs is not None):
            raise ValueError(
                "tie_embeddings=True needs one embedding table and a full output projection; with "
                "adaptive_input_cutoffs / adaptive_softmax_cutoffs set tie_embeddings=False (share the "
                "adaptive tables with tie_adaptive_weights / tie_adaptive_proj)"
            )

    @classmethod
    def from_core(cls, core: MegaCoreConfig, **overrides: Any) -> "MegaLMConfig":
        """The LM config of a core config (a preset); refuses encoder configs.

        The head fields a preset keeps in ``extra`` under their HF names
        (``add_lm_hidden_dense_layer``, ``tie_word_embeddings``) are honoured; without them, the
        output projection is tied unless the model has an adaptive input or softmax.
        """
        _check_causal(core, "a MEGA causal LM needs is_decoder=True and bidirectional=False")
        adaptive = core.adaptive_softmax_cutoffs is not None or core.adaptive_input_cutoffs is not None
        head = {"tie_embeddings": bool(core.extra.get("tie_word_embeddings", not adaptive))}
        if "add_lm_hidden_dense_layer" in core.extra:
            head["add_lm_hidden_dense_layer"] = bool(core.extra["add_lm_hidden_dense_layer"])
        return cls(**{**_lm_values(core), **head, **overrides})

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> "MegaLMConfig":
        """The LM config of an HF MEGA ``config.json`` dict (missing keys take the HF defaults)."""
        from ...formats.hf import HF_ONLY_DEFAULTS

        core = MegaCoreConfig.from_mapping({k: v for k, v in hf.items() if not k.startswith("_")})
        _check_causal(
            core, "the HF config is not a causal MEGA (needs is_decoder=true and bidirectional=false)"
        )
        if hf.get("add_cross_attention"):
            raise ValueError("add_cross_attention=true (encoder-decoder MEGA) has no fairseq2 CausalLM form")
        return cls(
            **_lm_values(core),
            add_lm_hidden_dense_layer=bool(
                hf.get("add_lm_hidden_dense_layer", HF_ONLY_DEFAULTS["add_lm_hidden_dense_layer"])
            ),
            tie_embeddings=bool(hf.get("tie_word_embeddings", HF_ONLY_DEFAULTS["tie_word_embeddings"])),
        )

    def to_hf_config(self) -> dict[str, Any]:
        """The HF ``config.json`` dict of this model (``MegaForCausalLM``), via the shared HF layout."""
        from ...formats.hf import ARCHITECTURE_CAUSAL_LM, hf_config_dict

        return hf_config_dict(
            self.to_core(),
            architectures=[ARCHITECTURE_CAUSAL_LM],
            add_lm_hidden_dense_layer=self.add_lm_hidden_dense_layer,
            tie_word_embeddings=self.tie_embeddings,
        )


def _check_causal(core: MegaCoreConfig, message: str) -> None:
    if core.bidirectional or not core.is_decoder:
        raise ValueError(f"{message}; got is_decoder={core.is_decoder}, bidirectional={core.bidirectional}")


def _lm_values(core: MegaCoreConfig) -> dict[str, Any]:
    # The LM fields a core config determines: the shared ones and the renamed ones.
    values = {name: getattr(core, name) for name in SHARED_FIELDS}
    values.update({lm_name: getattr(core, core_name) for core_name, lm_name in RENAMED_CORE_FIELDS.items()})
    return values


def config_values(config: MegaLMConfig) -> dict[str, Any]:
    """Every field of ``config`` as a plain dict (for asset cards)."""
    return dataclasses.asdict(config)
