"""State-dict key maps between HF MEGA (``MegaForCausalLM``) and :class:`MegaCausalLM`.

The maps are fairseq2-style regex dicts (a pattern anchored at the start of a key, the
replacement for the matched prefix) applied with fairseq2's own
:func:`fairseq2.models.utils.checkpoint.convert_state_dict`; the reverse map is derived with
its :func:`~fairseq2.models.utils.checkpoint.create_reverse_key_map`, so the two directions
cannot disagree. fairseq2 passes unmatched keys through unchanged; here a key no pattern
matches is an error that names it, so nothing is dropped or carried over silently.
"""

from __future__ import annotations

import re
from typing import Final, Mapping

import torch
from fairseq2.models.utils.checkpoint import convert_state_dict, create_reverse_key_map

from ...formats.hf import HF_WORD_EMBEDDINGS
from .config import MegaLMConfig

HF_TO_FS2: Final[Mapping[str, str]] = {
    # fmt: off
    r"^mega\.embedding_layer\.word_embeddings\.":       r"decoder_frontend.embed.",
    r"^mega\.embedding_layer\.token_type_embeddings\.": r"decoder_frontend.token_type_embed.",
    r"^mega\.layers\.([0-9]+)\.":                       r"decoder.layers.\1.",
    r"^mega\.final_norm\.":                            r"decoder.final_norm.",
    r"^adaptive_softmax\.":                             r"final_proj.",
    r"^dense\.":                                         r"head.dense.",
    r"^lm_head\.":                                       r"final_proj.",
    # fmt: on
}
"""HF ``MegaForCausalLM`` key prefix -> ``MegaCausalLM`` key prefix."""

FS2_TO_HF: Final[Mapping[str, str]] = create_reverse_key_map(
    {k: v for k, v in HF_TO_FS2.items() if not k.startswith(r"^adaptive_softmax")}
)
"""``MegaCausalLM`` key prefix -> HF ``MegaForCausalLM`` key prefix (the reverse of :data:`HF_TO_FS2`)."""

FS2_TO_HF_ADAPTIVE: Final[Mapping[str, str]] = {**FS2_TO_HF, r"^final_proj\.": "adaptive_softmax."}
"""The same for a model whose ``final_proj`` is an adaptive softmax (HF ``adaptive_softmax.*``)."""

_FRONTEND: Final = "decoder_frontend.embed."
_EMBED: Final = f"{_FRONTEND}weight"
HF_INPUT: Final = "mega.embedding_layer.word_embeddings."
_OUTPUT: Final = "final_proj.weight"
_HF_OUTPUT: Final = "lm_head.weight"


def map_keys(state_dict: Mapping[str, object], key_map: Mapping[str, str], source: str) -> dict[str, object]:
    """Rename every key with fairseq2's ``convert_state_dict``; raise naming the keys no pattern matches."""
    unmapped = [key for key in state_dict if not any(re.match(pattern, key) for pattern in key_map)]
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} key(s) of the {source} MEGA checkpoint have no counterpart: {', '.join(sorted(unmapped))}"
        )
    return convert_state_dict(dict(state_dict), key_map)


def convert_mega_state_dict(state_dict: dict[str, object], config: MegaLMConfig) -> dict[str, object]:
    """The family's state-dict converter: HF MEGA causal-LM keys -> ``MegaCausalLM`` keys.

    A checkpoint already in fairseq2 layout passes through. With tied embeddings the output
    weight is the embedding (HF checkpoints omit ``lm_head.weight`` then).
    """
    fs2_embed, hf_embed = _EMBED, HF_WORD_EMBEDDINGS
    if config.adaptive_input_cutoffs is not None:  # adaptive input: band 0's table stands for the embedding
        fs2_embed, hf_embed = f"{_FRONTEND}bands.0.weight", f"{HF_INPUT}bands.0.weight"
    if fs2_embed in state_dict:
        converted = dict(state_dict)
    else:
        if hf_embed not in state_dict:
            raise ValueError(
                f"not a MEGA causal-LM checkpoint: neither {hf_embed!r} (HF) nor {fs2_embed!r} (fairseq2) is present"
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
    key_map = FS2_TO_HF if config.adaptive_softmax_cutoffs is None else FS2_TO_HF_ADAPTIVE
    converted = map_keys(state_dict, key_map, "fairseq2")
    if config.tie_embeddings:
        converted.pop(_HF_OUTPUT, None)
    return converted
