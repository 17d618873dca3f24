"""The ``fairseq-mega`` conversion: a facebookresearch/mega checkpoint -> (HF config dict, HF state dict).

Each source key is mapped (:mod:`.keys`), the architecture is read from the tensors and the
args (:mod:`.config`), and the config is written with :func:`mega_plugin.formats.hf.hf_config_dict`.
Value changes: the LM's sqrt(d) embedding scale is folded into the embedding table (the head then
keeps the unscaled table, untied); the simple bias of a chunked model is copied into the head of
the longer HF table (see docs/plugins.md).

Nothing is dropped silently: keys the HF layout cannot hold (final norm, adaptive softmax,
adaptive input, LRA classifier, ...) and unknown keys raise :class:`ConversionError` listing
them, unless the caller allows them with ``allow_drop`` glob patterns.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
from typing import Any, Final, Mapping, Sequence

import torch
from torch import Tensor

from ...core.config import MegaCoreConfig
from ...formats.hf import ARCHITECTURE_BASE, ARCHITECTURE_CAUSAL_LM, HF_PREFIX, HF_WORD_EMBEDDINGS, hf_config_dict
from ...registry.records import ConversionError
from .config import arg, architecture_errors, infer_architecture, log_notes
from .lra import convert_lra, is_lra_checkpoint
from .language_model import LanguageModelParts, language_model_parts
from .seq2seq import convert_seq2seq, is_seq2seq_checkpoint
from .keys import (
    EMBEDDING_KEYS,
    IGNORED,
    LAYER_KEY,
    OUTPUT_PROJECTION_KEY,
    UNREPRESENTABLE_ANYWHERE,
    UNREPRESENTABLE_IN_MODEL,
    map_layer_key,
    model_prefix,
    unrepresentable_reason,
)

logger = logging.getLogger("mega_plugin.registry.convert")

NAME: Final = "fairseq-mega"
"""The converter's registered name (``mega-plugin convert --from fairseq-mega``)."""


def _failure(unrepresentable: dict[str, str], unmapped: list[str]) -> ConversionError:
    lines = ["cannot convert this fairseq-mega checkpoint without losing weights:"]
    if unrepresentable:
        lines.append("  not representable in the HF MEGA layout:")
        lines += [f"    {key}: {why}" for key, why in sorted(unrepresentable.items())]
    if unmapped:
        lines.append("  unknown keys (no mapping):")
        lines += [f"    {key}" for key in sorted(unmapped)]
    example = next(iter(sorted(unrepresentable)), None) or sorted(unmapped)[0]
    lines.append(
        "drop them explicitly with --allow-drop PATTERN (a glob on the source key, repeatable), "
        f"e.g. --allow-drop '{example.rsplit('.', 1)[0]}*'"
    )
    return ConversionError("\n".join(lines), unmapped=sorted(unmapped), unrepresentable=sorted(unrepresentable))


def convert_fairseq_mega(
    state_dict: Mapping[str, Tensor],
    original_args: Mapping[str, Any] | None,
    *,
    allow_drop: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Original facebookresearch/mega checkpoint (LM, LRA encoder, or translation model) -> (HF config
    dict, HF state dict); a translation model gives an ``EncoderDecoderModel`` directory (:mod:`.seq2seq`)."""
    args = dict(original_args or {})
    keys = list(state_dict)
    if is_seq2seq_checkpoint(keys):  # a translation model: an EncoderDecoderModel directory
        return convert_seq2seq(state_dict, args, allow_drop=allow_drop)
    if is_lra_checkpoint(keys):  # an LRA classifier: MegaForSequenceClassification / MegaForImageClassification
        return convert_lra(state_dict, args, allow_drop=allow_drop)
    state_dict = _widened(state_dict)
    prefix, num_layers = model_prefix(keys)
    causal = prefix.split(".", 1)[0] == "decoder"
    parts = _language_model_parts(state_dict, args, prefix, causal)
    mapped: dict[str, Tensor] = dict(parts.mapped)
    unrepresentable: dict[str, str] = {}
    unmapped: list[str] = []
    embedding: Tensor | None = None
    output_projection: Tensor | None = None
    for key in keys:
        tensor = state_dict[key]
        inner = key[len(prefix):] if key.startswith(prefix) else None
        match = LAYER_KEY.match(key)
        if IGNORED.match(key) or key in parts.consumed:
            continue
        if match and match["prefix"] == prefix and (target := map_layer_key(match["rest"])) is not None:
            mapped[f"{HF_PREFIX}layers.{match['index']}.{target}"] = tensor
        elif inner in EMBEDDING_KEYS and tensor.dim() == 2:
            embedding = tensor
        elif inner == OUTPUT_PROJECTION_KEY and causal:
            output_projection = tensor
        elif inner is not None and (why := unrepresentable_reason(UNREPRESENTABLE_IN_MODEL, inner)) is not None:
            unrepresentable[key] = why
        elif (why := unrepresentable_reason(UNREPRESENTABLE_ANYWHERE, key)) is not None:
            unrepresentable[key] = why
        else:
            unmapped.append(key)
    prenorm = arg(args, "normalize_before", "encoder_normalize_before")
    if prenorm and not causal and not any(k.startswith(f"{prefix}final_norm.") for k in keys):
        # --no-affine-final-norm: the final norm exists but has no tensors; still not representable.
        unrepresentable[f"{prefix}final_norm"] = "parameter-free final norm after the last layer (pre-norm models)"
    dropped = [k for k in list(unrepresentable) + unmapped if any(fnmatch.fnmatchcase(k, p) for p in allow_drop)]
    for key in dropped:
        unrepresentable.pop(key, None)
    unmapped = [k for k in unmapped if k not in dropped]
    if unrepresentable or unmapped:
        raise _failure(unrepresentable, unmapped)
    if dropped:
        logger.warning("dropping %d key(s) as allowed by --allow-drop: %s", len(dropped), ", ".join(sorted(dropped)))
    if embedding is None and parts.vocab_size is None:
        raise ConversionError(f"no token embedding found (expected {prefix}{EMBEDDING_KEYS[0]})")
    vocab_size = parts.vocab_size if embedding is None else embedding.shape[0]
    with architecture_errors():
        arch = infer_architecture(
            state_dict, prefix=prefix, num_layers=num_layers, causal=causal, args=args, vocab_size=vocab_size
        )
        core = dataclasses.replace(arch.core, **parts.fields)
    log_notes(arch)
    _resize_simple_bias(mapped, core.max_positions, arch.original_bias_positions)
    if embedding is None or core.adaptive_softmax_cutoffs is not None:  # adaptive input and/or softmax
        return _adaptive_config(core, mapped, embedding, arch.scale_embeddings), mapped

    scale = math.sqrt(core.hidden_size) if arch.scale_embeddings else 1.0
    mapped[HF_WORD_EMBEDDINGS] = embedding * scale if scale != 1.0 else embedding
    head = output_projection
    if head is None and causal and arg(args, "share_decoder_input_output_embed", default=False):
        head = embedding
    architectures = [ARCHITECTURE_BASE]
    # An encoder checkpoint has no LM head: a masked-LM head built on it shares the embedding
    # table, as in every HF MEGA masked LM. A decoder without a head has nothing to tie.
    tie = not causal
    if causal and head is not None:
        architectures = [ARCHITECTURE_CAUSAL_LM]
        tie = scale == 1.0 and head.shape == embedding.shape and torch.equal(head, embedding)
        mapped["lm_head.weight"] = head
        mapped["lm_head.bias"] = torch.zeros(head.shape[0], dtype=head.dtype)
    config = hf_config_dict(
        core, architectures=architectures, add_lm_hidden_dense_layer=False, tie_word_embeddings=tie
    )
    return config, mapped


def _widened(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fp16/bf16 tensors widened to fp32 (exactly: every such value is an fp32 value), so the
    converted model and the sqrt(d) scale folded into an embedding compute in fp32."""
    return {
        key: tensor.float() if tensor.is_floating_point() and tensor.dtype != torch.float32 else tensor
        for key, tensor in state_dict.items()
    }


def _language_model_parts(
    state_dict: Mapping[str, Tensor], args: Mapping[str, Any], prefix: str, causal: bool
) -> LanguageModelParts:
    """The final norm, adaptive input and adaptive softmax of a language model (nothing for encoders)."""
    if not causal:
        return LanguageModelParts()
    v_proj = state_dict.get(f"{prefix}layers.0.mega_layer.v_proj.weight")
    if v_proj is None:
        raise ConversionError(f"layer 0 lacks a required tensor: {prefix}layers.0.mega_layer.v_proj.weight")
    table = next((state_dict[f"{prefix}{k}"] for k in EMBEDDING_KEYS if f"{prefix}{k}" in state_dict), None)
    vocab = table.shape[0] if table is not None and table.dim() == 2 else None
    return language_model_parts(state_dict, args, prefix=prefix, hidden=v_proj.shape[1], vocab_size=vocab)


def _adaptive_config(
    core: MegaCoreConfig, mapped: dict[str, Tensor], embedding: Tensor | None, scale: bool
) -> dict[str, Any]:
    """config.json of a language model with adaptive input or softmax: the sqrt(d) scale stays in
    the model (``scale_embeddings``; a tied table cannot hold it), no ``lm_head``."""
    core = dataclasses.replace(core, scale_embeddings=scale)
    if embedding is not None:
        mapped[HF_WORD_EMBEDDINGS] = embedding
    if core.adaptive_softmax_cutoffs is None:
        raise ConversionError("adaptive input with a full output projection is not supported; expected an adaptive softmax")
    return hf_config_dict(
        core, architectures=[ARCHITECTURE_CAUSAL_LM], add_lm_hidden_dense_layer=False, tie_word_embeddings=False
    )


def _resize_simple_bias(mapped: dict[str, Tensor], max_positions: int, original_positions: int | None) -> None:
    """Copy each original 2P-1 simple-bias vector into the head of the HF 2*max_positions-1 table.

    The HF port reads ``rel[c - L : c + L - 1]`` with c = chunk_size, exactly the indices the
    original reads from its own (chunk-sized) vector, so the rest of the table is never read.
    """
    if original_positions is None:
        return
    size = 2 * max_positions - 1
    for key, tensor in mapped.items():
        if key.endswith("rel_pos_bias.rel_pos_bias") and tensor.shape[0] != size:
            table = torch.zeros(size, dtype=tensor.dtype)
            table[: tensor.shape[0]] = tensor
            mapped[key] = table
