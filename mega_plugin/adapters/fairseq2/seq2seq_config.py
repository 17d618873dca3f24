"""``MegaSeq2SeqConfig``: the fairseq2 configuration of an encoder-decoder (translation) MEGA.

The architectural fields come from :class:`mega_plugin.core.MegaCoreConfig` (derived, as for
:class:`~.config.MegaLMConfig`) and describe both stacks, as the original ``mega_wmt_en_de``
does by default: ``num_hidden_layers`` is the encoder's depth, ``num_decoder_layers`` the
decoder's. The encoder runs a bidirectional EMA; the decoder a causal one with gated
cross-attention. Importing this module does not import fairseq2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final, Mapping

from ...core.config import MegaCoreConfig
from .config import SHARED_FIELDS, MegaCoreFields

MEGA_SEQ2SEQ_FAMILY: Final = "mega_seq2seq"
"""Name of the fairseq2 model family."""

WMT_EN_DE: Final[Mapping[str, Any]] = {
    # The paper's Mega-base for WMT'16 en-de (facebookresearch/mega ``mega_wmt_en_de`` with the
    # README's training command): d 512, v = FFN 1024, z 128, EMA 16, 6 + 6 layers, no chunking,
    # layernorm, post-norm, softmax, simple bias over 1024 positions, sqrt(d)-scaled embeddings
    # shared by the encoder, the decoder and the output projection.
    "vocab_size": 32768,
    "hidden_size": 512,
    "num_hidden_layers": 6,
    "intermediate_size": 1024,
    "shared_representation_size": 128,
    "ema_projection_size": 16,
    "nffn_hidden_size": 1024,
    "use_chunking": False,
    "chunk_size": -1,
    "truncation": None,
    "normalization_type": "layernorm",
    "normalize_before_mega": False,
    "normalize_before_ffn": False,
    "activation": "silu",
    "attention_activation": "softmax",
    "relative_positional_bias": "simple",
    "max_positions": 1024,
    "scale_embeddings": True,
    "dropout_prob": 0.15,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "nffn_activation_dropout_prob": 0.1,
}
"""The field values of the ``mega_wmt_en_de`` arch."""


@dataclass(kw_only=True)
class MegaSeq2SeqConfig(MegaCoreFields):  # type: ignore[misc, valid-type]  # base built from the core's fields
    """An encoder-decoder MEGA: bidirectional encoder, causal decoder with gated cross-attention."""

    num_decoder_layers: int = 6
    """Decoder depth (``num_hidden_layers`` is the encoder's)."""

    max_source_seq_len: int = 1024
    """Longest source sequence."""

    max_target_seq_len: int = 1024
    """Longest target sequence the generators may produce."""

    pad_idx: int | None = 1
    """Padding id of both vocabularies (fairseq's ``<pad>``)."""

    share_embeddings: bool = True
    """One token table for encoder and decoder (the original's ``--share-all-embeddings``)."""

    tie_embeddings: bool = True
    """Output projection = decoder token table (``--share-decoder-input-output-embed``)."""

    def encoder_core(self) -> MegaCoreConfig:
        """The encoder stack's core config (validates every field)."""
        self.validate_seq2seq_fields()
        return self._core(bidirectional=True, is_decoder=False, add_cross_attention=False)

    def decoder_core(self) -> MegaCoreConfig:
        """The decoder stack's core config: causal, with cross-attention."""
        self.validate_seq2seq_fields()
        return self._core(
            bidirectional=False, is_decoder=True, add_cross_attention=True, num_hidden_layers=self.num_decoder_layers
        )

    def _core(self, **fixed: Any) -> MegaCoreConfig:
        values = {name: getattr(self, name) for name in SHARED_FIELDS}
        values.update(fixed)
        return MegaCoreConfig(**values, pad_token_id=self.pad_idx)

    def validate_seq2seq_fields(self) -> None:
        """``ValueError`` naming the field for a bad seq2seq-only field (the core checks the rest)."""
        for name in ("num_decoder_layers", "max_source_seq_len", "max_target_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        pad = self.pad_idx
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size):
            raise ValueError(f"pad_idx must be None or an integer in [0, vocab_size={self.vocab_size}), got {pad!r}")
        for name in ("share_embeddings", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> "MegaSeq2SeqConfig":
        """The config of an HF ``EncoderDecoderModel`` config.json dict of two MEGA configs.

        Both sides must agree on every architectural field but the depth and the EMA direction;
        otherwise a ``ValueError`` names the fields that differ.
        """
        if hf.get("model_type") != "encoder-decoder":
            raise ValueError(f"expected an EncoderDecoderModel config (model_type 'encoder-decoder'), got {hf.get('model_type')!r}")
        sides = {side: hf.get(side) or {} for side in ("encoder", "decoder")}
        for side, values in sides.items():
            if values.get("model_type") != "mega":
                raise ValueError(f"the {side} is not a MEGA model (model_type {values.get('model_type')!r})")
        encoder = MegaCoreConfig.from_mapping({k: v for k, v in sides["encoder"].items() if not k.startswith("_")})
        decoder = MegaCoreConfig.from_mapping({k: v for k, v in sides["decoder"].items() if not k.startswith("_")})
        differing = [
            name for name in SHARED_FIELDS
            if name != "num_hidden_layers" and getattr(encoder, name) != getattr(decoder, name)
        ]
        if differing:
            raise ValueError(
                "the fairseq2 seq2seq MEGA has one set of sizes for both stacks; encoder and decoder differ in "
                + ", ".join(f"{n} ({getattr(encoder, n)!r} vs {getattr(decoder, n)!r})" for n in differing)
            )
        values = {name: getattr(encoder, name) for name in SHARED_FIELDS}
        shared = bool(hf.get("share_embeddings", False))  # written by the fairseq-mega converter
        return cls(
            **values,
            num_decoder_layers=decoder.num_hidden_layers,
            pad_idx=encoder.pad_token_id,
            share_embeddings=shared,
            tie_embeddings=bool(sides["decoder"].get("tie_word_embeddings", True)),
            max_source_seq_len=int(hf.get("max_source_positions", encoder.max_positions)),
            max_target_seq_len=int(hf.get("max_target_positions", decoder.max_positions)),
        )


def wmt_en_de() -> MegaSeq2SeqConfig:
    """The ``mega_wmt_en_de`` arch: the paper's WMT'16 en-de Mega-base (6 + 6 layers, d 512)."""
    return MegaSeq2SeqConfig(**WMT_EN_DE, num_decoder_layers=6)


def seq2seq_config_values(config: MegaSeq2SeqConfig) -> dict[str, Any]:
    """Every field of ``config`` as a plain dict (for asset cards)."""
    return dataclasses.asdict(config)
