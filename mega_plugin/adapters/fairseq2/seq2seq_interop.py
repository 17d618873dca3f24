"""State-dict key maps between an HF ``EncoderDecoderModel`` of MEGA and :class:`MegaSeq2SeqModel`.

Regex dicts applied with fairseq2's ``convert_state_dict`` (through :func:`.interop.map_keys`,
which names every key no pattern matches). The encoder's pooler, which ``EncoderDecoderModel``
never uses, is the one HF part left out. Shared and tied tables are checked, never assumed.
"""

from __future__ import annotations

from typing import Final, Mapping

import torch

from .interop import map_keys
from .seq2seq_config import MegaSeq2SeqConfig

HF_TO_FS2: Final[Mapping[str, str]] = {
    # fmt: off
    r"^encoder\.embedding_layer\.word_embeddings\.":       r"encoder_frontend.embed.",
    r"^encoder\.layers\.([0-9]+)\.":                       r"encoder.layers.\1.",
    r"^decoder\.mega\.embedding_layer\.word_embeddings\.": r"decoder_frontend.embed.",
    r"^decoder\.mega\.layers\.([0-9]+)\.":                 r"decoder.layers.\1.",
    r"^decoder\.lm_head\.":                                r"final_proj.",
    # fmt: on
}
"""HF ``EncoderDecoderModel`` key prefix -> ``MegaSeq2SeqModel`` key prefix."""

UNUSED_HF: Final = ("encoder.pooler.",)
"""HF keys with no counterpart that the translation model never reads."""

_ENCODER_EMBED: Final = "encoder_frontend.embed.weight"
_DECODER_EMBED: Final = "decoder_frontend.embed.weight"
_OUTPUT: Final = "final_proj.weight"


def _same(first: object, second: object) -> bool:
    return first is second or torch.equal(first, second)  # type: ignore[arg-type]


def convert_mega_seq2seq_state_dict(state_dict: dict[str, object], config: MegaSeq2SeqConfig) -> dict[str, object]:
    """The family's state-dict converter: HF ``EncoderDecoderModel`` keys (or fairseq2's) -> ours."""
    if _ENCODER_EMBED in state_dict:
        converted = dict(state_dict)
    else:
        kept = {k: v for k, v in state_dict.items() if not k.startswith(UNUSED_HF)}
        converted = map_keys(kept, HF_TO_FS2, "HF encoder-decoder")
    if config.share_embeddings:
        decoder_embed = converted.setdefault(_DECODER_EMBED, converted[_ENCODER_EMBED])
        if not _same(decoder_embed, converted[_ENCODER_EMBED]):
            raise ValueError(
                "share_embeddings=True but the checkpoint's encoder and decoder token tables differ; "
                "set share_embeddings=False to load it"
            )
        converted[_DECODER_EMBED] = converted[_ENCODER_EMBED]
    if config.tie_embeddings:
        output = converted.get(_OUTPUT)
        if output is not None and not _same(output, converted[_DECODER_EMBED]):
            raise ValueError(
                "tie_embeddings=True but the checkpoint's output projection differs from the decoder token table; "
                "set tie_embeddings=False (HF decoder tie_word_embeddings=false) to load it"
            )
        converted[_OUTPUT] = converted[_DECODER_EMBED]
    return converted
