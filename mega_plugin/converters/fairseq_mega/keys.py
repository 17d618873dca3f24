"""Key names of the original facebookresearch/mega checkpoints, and where each goes in the HF MEGA layout.

Key map (per layer, regex -> HF name under ``mega.layers.{i}.``): the EMA ``move.{delta, alpha,
beta, gamma, omega}`` become ``ema_gate.{damping_factor, decay_factor, ema_expansion_matrix,
kernel_projection_matrix, residual_weight}`` (the released code computes p = sigmoid(delta)),
the attention ``gamma``/``beta`` become ``qk_weight``/``qk_bias``, the rotary ``beta`` becomes
``b_param``; projections, norms (``norm`` or ``norm.norm`` -> ``norm.norm``) and the NFFN keep
their names. The layers live under one model prefix: ``decoder.`` (language models),
``encoder.`` or the LRA ``encoder.encoder.``. Keys the HF layout cannot hold are listed with the
reason, so the converter can name them instead of dropping them.
"""

from __future__ import annotations

import re
from typing import Final, Mapping, Sequence

from ...registry.records import ConversionError

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

LAYER_KEY: Final = re.compile(r"^(?P<prefix>(?:\w+\.)*?)layers\.(?P<index>\d+)\.(?P<rest>(?:mega_layer|nffn)\..+)$")
"""A per-layer key: its model ``prefix``, layer ``index`` and the ``rest`` that :data:`LAYER_KEY_MAP` maps."""

_COMPILED_LAYER_MAP: Final = [(re.compile(rf"^{k}$"), v) for k, v in LAYER_KEY_MAP.items()]


def model_prefix(keys: Sequence[str]) -> tuple[str, int]:
    """(the prefix the MEGA layers live under, the number of layers); ``ConversionError`` unless there is one."""
    prefixes: dict[str, set[int]] = {}
    for key in keys:
        match = LAYER_KEY.match(key)
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


def unrepresentable_reason(patterns: Mapping[str, str], key: str) -> str | None:
    """Why ``key`` has no place in the HF layout (the first of ``patterns`` it fully matches), else None."""
    for pattern, reason in patterns.items():
        if re.fullmatch(pattern, key):
            return reason
    return None


def map_layer_key(rest: str) -> str | None:
    """The HF name (after ``mega.layers.{i}.``) of a layer key's ``rest``, or None when no mapping matches."""
    for pattern, replacement in _COMPILED_LAYER_MAP:
        if pattern.fullmatch(rest):
            return pattern.sub(replacement, rest)
    return None
