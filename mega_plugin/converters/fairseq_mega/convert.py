"""The built-in ``fairseq-mega`` converter: facebookresearch/mega checkpoints -> the HF MEGA layout.

Key map (per layer, regex -> HF name under ``mega.layers.{i}.``): the EMA ``move.{delta, alpha,
beta, gamma, omega}`` become ``ema_gate.{damping_factor, decay_factor, ema_expansion_matrix,
kernel_projection_matrix, residual_weight}`` (the released code computes p = sigmoid(delta)),
the attention ``gamma``/``beta`` become ``qk_weight``/``qk_bias``, the rotary ``beta`` becomes
``b_param``; projections, norms (``norm`` or ``norm.norm`` -> ``norm.norm``) and the NFFN keep
their names. Language models (``decoder.`` prefix) and encoders (``encoder.`` or the LRA
``encoder.encoder.``) are both handled. Value changes: the LM's sqrt(d) embedding scale is folded
into the embedding table (the head then keeps the unscaled table, untied); the simple bias of a
chunked model is copied into the head of the longer HF table (see docs/plugins.md).

Nothing is dropped silently: keys the HF layout cannot hold (final norm, adaptive softmax,
adaptive input, LRA classifier, ...) and unknown keys raise :class:`ConversionError` listing
them, unless the caller allows them with ``allow_drop`` glob patterns.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from typing import Any, Final, Mapping, Sequence

import torch
from torch import Tensor

from ...formats.hf import ARCHITECTURE_BASE, ARCHITECTURE_CAUSAL_LM, HF_PREFIX, HF_WORD_EMBEDDINGS, hf_config_dict
from ...registry.records import ConversionError
from .config import arg, infer_architecture

logger = logging.getLogger("mega_plugin.registry.convert")

NAME: Final = "fairseq-mega"

LAYER_KEY_MAP: Final[dict[str, str]] = {
    r"mega_layer\.move\.delta": "mega_layer.ema_gate.damping_factor",
    r"mega_layer\.move\.alpha": "mega_layer.ema_gate.decay_factor",
    r"mega_layer\.move\.beta": "mega_layer.ema_gate.ema_expansion_matrix",
    r"mega_layer\.move\.gamma": "mega_layer.ema_gate.kernel_projection_matrix",
    r"mega_layer\.move\.omega": "mega_layer.ema_gate.residual_weight",
    r"mega_layer\.gamma": "mega_layer.qk_weight",
    r"mega_layer\.beta": "mega_layer.qk_bias",
    r"mega_layer\.rel_pos_bias\.beta": "mega_layer.rel_pos_bias.b_param",
    r"mega_layer\.rel_pos_bias\.(alpha|rel_pos_bias|_float_tensor)": r"mega_layer.rel_pos_bias.\1",
    r"mega_layer\.(v_proj|mx_proj|h_proj)\.(weight|bias)": r"mega_layer.\1.\2",
    r"(mega_layer|nffn)\.norm\.(?:norm\.)?(weight|bias|scalar|running_mean|running_var|num_batches_tracked)": (
        r"\1.norm.norm.\2"
    ),
    r"nffn\.(fc1|fc2)\.(weight|bias)": r"nffn.\1.\2",
}
"""Source key after ``<prefix>layers.{i}.`` -> HF key after ``mega.layers.{i}.`` (full match)."""

EMBEDDING_KEYS: Final = ("embed_tokens.weight", "embed_tokens.embed.weight")
OUTPUT_PROJECTION_KEY: Final = "output_projection.weight"

UNREPRESENTABLE_IN_MODEL: Final[dict[str, str]] = {
    r"final_norm\..+": "final norm after the last layer (pre-norm models); the HF layout has none",
    r"adaptive_softmax\..+": "adaptive softmax output layer; HF MEGA has a full-vocabulary head",
    r"embed_tokens\.embeddings\..+": "adaptive input embeddings; HF MEGA has one embedding table",
    r"embed_tokens\.(weight|bias)": "real-number (pixel) embedding; HF MEGA has a token table",
    r"project_in_dim\..+": "input projection after the embedding",
    r"embed_norm\..+": "embedding norm (normalize_embedding)",
    r"layers\.\d+\.cross_attn\..+": (
        "gated cross-attention of a translation decoder; the converter writes one causal LM and does not "
        "map fairseq encoder-decoder checkpoints to an EncoderDecoderModel"
    ),
}
"""Keys (after the model prefix) with no place in the HF layout, and why."""

UNREPRESENTABLE_ANYWHERE: Final[dict[str, str]] = {
    r"classifier\..+": "LRA classification head (mean pooling + MLP); not the HF classifier layout",
    r"sentence_projection_layer\..+": "LRA classification head (mean pooling + MLP); not the HF classifier layout",
}
IGNORED: Final = re.compile(r"^(.+\.)?version$")
"""fairseq's bookkeeping buffer (``decoder.version``): metadata, not a weight."""

_LAYER_KEY: Final = re.compile(r"^(?P<prefix>(?:\w+\.)*?)layers\.(?P<index>\d+)\.(?P<rest>(?:mega_layer|nffn)\..+)$")
_COMPILED_LAYER_MAP: Final = [(re.compile(rf"^{k}$"), v) for k, v in LAYER_KEY_MAP.items()]


def _model_prefix(keys: Sequence[str]) -> tuple[str, int]:
    prefixes: dict[str, set[int]] = {}
    for key in keys:
        match = _LAYER_KEY.match(key)
        if match:
            prefixes.setdefault(match["prefix"], set()).add(int(match["index"]))
    if not prefixes:
        raise ConversionError(
            "no MEGA layers found: expected keys like 'decoder.layers.0.mega_layer.move.delta' "
            "(language models) or 'encoder.encoder.layers.0.mega_layer.move.delta' (LRA)"
        )
    if len(prefixes) > 1:
        raise ConversionError(f"MEGA layers under several prefixes: {', '.join(sorted(prefixes))}")
    prefix, indices = next(iter(prefixes.items()))
    if indices != set(range(len(indices))):
        raise ConversionError(f"layer indices are not 0..{len(indices) - 1}: {sorted(indices)}")
    return prefix, len(indices)


def _reason(patterns: Mapping[str, str], key: str) -> str | None:
    for pattern, reason in patterns.items():
        if re.fullmatch(pattern, key):
            return reason
    return None


def _map_layer_key(rest: str) -> str | None:
    for pattern, replacement in _COMPILED_LAYER_MAP:
        if pattern.fullmatch(rest):
            return pattern.sub(replacement, rest)
    return None


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
    """Original facebookresearch/mega checkpoint (LM or LRA encoder) -> (HF config dict, HF state dict)."""
    args = dict(original_args or {})
    keys = list(state_dict)
    prefix, num_layers = _model_prefix(keys)
    causal = prefix.split(".", 1)[0] == "decoder"
    mapped: dict[str, Tensor] = {}
    unrepresentable: dict[str, str] = {}
    unmapped: list[str] = []
    embedding: Tensor | None = None
    output_projection: Tensor | None = None
    for key in keys:
        tensor = state_dict[key]
        inner = key[len(prefix):] if key.startswith(prefix) else None
        match = _LAYER_KEY.match(key)
        if IGNORED.match(key):
            continue
        if match and match["prefix"] == prefix and (target := _map_layer_key(match["rest"])) is not None:
            mapped[f"{HF_PREFIX}layers.{match['index']}.{target}"] = tensor
        elif inner in EMBEDDING_KEYS and tensor.dim() == 2:
            embedding = tensor
        elif inner == OUTPUT_PROJECTION_KEY and causal:
            output_projection = tensor
        elif (why := _reason(UNREPRESENTABLE_IN_MODEL, inner) if inner is not None else None) is not None:
            unrepresentable[key] = why
        elif (why := _reason(UNREPRESENTABLE_ANYWHERE, key)) is not None:
            unrepresentable[key] = why
        else:
            unmapped.append(key)
    prenorm = arg(args, "normalize_before", "encoder_normalize_before")
    if prenorm and not any(k.startswith(f"{prefix}final_norm.") for k in keys):
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
    if embedding is None:
        raise ConversionError(f"no token embedding found (expected {prefix}{EMBEDDING_KEYS[0]})")
    try:
        arch = infer_architecture(
            state_dict, prefix=prefix, num_layers=num_layers, causal=causal, args=args, vocab_size=embedding.shape[0]
        )
    except ConversionError:
        raise
    except ValueError as error:
        raise ConversionError(f"the checkpoint's architecture is not a valid MEGA config: {error}") from error
    for note in arch.notes:
        logger.warning("fairseq-mega: %s", note)
    core = arch.core
    _resize_simple_bias(mapped, core.max_positions, arch.original_bias_positions)

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
