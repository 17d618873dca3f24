"""State-dict key maps between HF MEGA (``MegaForCausalLM``) and :class:`MegaCausalLM`.

The maps are regex dicts applied in order; a key no pattern matches is an error that names
it, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from typing import Final, Mapping

import torch

from ...formats.hf import HF_WORD_EMBEDDINGS
from .config import MegaLMConfig

HF_TO_FS2: Final[Mapping[str, str]] = {
    # fmt: off
    r"^mega\.embedding_layer\.word_embeddings\.weight$":       r"decoder_frontend.embed.weight",
    r"^mega\.embedding_layer\.token_type_embeddings\.weight$": r"decoder_frontend.token_type_embed.weight",
    r"^mega\.layers\.([0-9]+)\.(.+)$":                         r"decoder.layers.\1.\2",
    r"^dense\.(weight|bias)$":                                 r"head.dense.\1",
    r"^lm_head\.(weight|bias)$":                               r"final_proj.\1",
    # fmt: on
}
"""HF ``MegaForCausalLM`` key -> ``MegaCausalLM`` key."""

FS2_TO_HF: Final[Mapping[str, str]] = {
    # fmt: off
    r"^decoder_frontend\.embed\.weight$":            r"mega.embedding_layer.word_embeddings.weight",
    r"^decoder_frontend\.token_type_embed\.weight$": r"mega.embedding_layer.token_type_embeddings.weight",
    r"^decoder\.layers\.([0-9]+)\.(.+)$":            r"mega.layers.\1.\2",
    r"^head\.dense\.(weight|bias)$":                 r"dense.\1",
    r"^final_proj\.(weight|bias)$":                  r"lm_head.\1",
    # fmt: on
}
"""``MegaCausalLM`` key -> HF ``MegaForCausalLM`` key."""

_EMBED: Final = "decoder_frontend.embed.weight"
_OUTPUT: Final = "final_proj.weight"
_HF_OUTPUT: Final = "lm_head.weight"


def map_keys(state_dict: Mapping[str, object], key_map: Mapping[str, str], source: str) -> dict[str, object]:
    """Rename every key with the first matching pattern; raise naming the keys none matches."""
    converted: dict[str, object] = {}
    unmapped = []
    for key, value in state_dict.items():
        for pattern, replacement in key_map.items():
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                converted[new_key] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} key(s) of the {source} MEGA checkpoint have no counterpart: {', '.join(sorted(unmapped))}"
        )
    return converted


def convert_mega_state_dict(state_dict: dict[str, object], config: MegaLMConfig) -> dict[str, object]:
    """The family's state-dict converter: HF MEGA causal-LM keys -> ``MegaCausalLM`` keys.

    A checkpoint already in fairseq2 layout passes through. With tied embeddings the output
    weight is the embedding (HF checkpoints omit ``lm_head.weight`` then).
    """
    if _EMBED in state_dict:
        converted = dict(state_dict)
    else:
        if HF_WORD_EMBEDDINGS not in state_dict:
            raise ValueError(
                f"not a MEGA causal-LM checkpoint: neither {HF_WORD_EMBEDDINGS!r} (HF) nor {_EMBED!r} (fairseq2) is present"
            )
        converted = map_keys(state_dict, HF_TO_FS2, "HF")
    if config.tie_embeddings:
        if _EMBED not in converted and _OUTPUT in converted:
            converted[_EMBED] = converted[_OUTPUT]  # a save that kept the output side of the tie
        embed = converted[_EMBED]
        output = converted.get(_OUTPUT)
        if output is not None and output is not embed and not torch.equal(output, embed):  # type: ignore[arg-type]
            raise ValueError(
                "tie_embeddings=True but the checkpoint's output projection differs from its token embedding; "
                "set tie_embeddings=False (HF tie_word_embeddings=false) to load it"
            )
        converted[_OUTPUT] = embed
    return converted


def to_hf_state_dict(state_dict: Mapping[str, object], config: MegaLMConfig) -> dict[str, object]:
    """``MegaCausalLM`` keys -> HF ``MegaForCausalLM`` keys (tied output weight left out, as HF saves)."""
    converted = map_keys(state_dict, FS2_TO_HF, "fairseq2")
    if config.tie_embeddings:
        converted.pop(_HF_OUTPUT, None)
    return converted
