"""Translation checkpoints (``mega_wmt_en_de``): an original encoder-decoder -> an HF ``EncoderDecoderModel``.

The original model holds a bidirectional MEGA encoder (``encoder.*``) and a causal MEGA decoder
with gated cross-attention (``decoder.*``, ``decoder.layers.{i}.cross_attn.*``). The HF form is
transformers' ``EncoderDecoderModel`` of our ``MegaModel`` (``encoder.*``) and ``MegaForCausalLM``
with ``add_cross_attention`` (``decoder.mega.*``, ``decoder.lm_head.*``). Both sides keep the
original's ``sqrt(d)`` embedding scale as ``scale_embeddings`` (applied in the model, the tables
are copied unchanged; fp16/bf16 tensors are widened to fp32, exactly), and the output projection is tied to the decoder embedding when the
original shared them (``share_decoder_input_output_embed`` / ``share_all_embeddings``).

What the HF layout cannot hold (final norms of pre-norm models, an embedding norm, an input
projection, an adaptive softmax) is refused with one :class:`ConversionError` listing every
such key. The cross-attention's simple bias keeps the original's own size
(``cross_attention_max_positions`` when it is not the self-attention's).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Final, Mapping, Sequence

import torch
from torch import Tensor

from ...core.config import MegaCoreConfig
from ...formats.hf import ARCHITECTURE_BASE, ARCHITECTURE_CAUSAL_LM, hf_config_dict
from ...registry.records import ConversionError
from .config import arg, infer_architecture
from .keys import EMBEDDING_KEYS, IGNORED, LAYER_KEY, OUTPUT_PROJECTION_KEY, map_layer_key

CROSS_KEY: Final = re.compile(r"^decoder\.layers\.(?P<index>\d+)\.cross_attn\.(?P<rest>.+)$")
"""A decoder cross-attention key: its layer ``index`` and the ``rest`` :data:`CROSS_KEY_MAP` maps."""

CROSS_KEY_MAP: Final[dict[str, str]] = {
    r"(k_proj|v_proj|q_proj|h_proj)\.(weight|bias)": r"\1.\2",
    r"norm\.(?:norm\.)?(weight|bias|scalar|running_mean|running_var|num_batches_tracked)": r"norm.norm.\1",
    r"rel_pos_bias\.(rel_pos_bias|alpha|_float_tensor)": r"rel_pos_bias.\1",
    r"rel_pos_bias\.beta": "rel_pos_bias.b_param",
}
"""Original key after ``cross_attn.`` -> ours after ``cross_attn.`` (full match)."""

UNREPRESENTABLE: Final[dict[str, str]] = {
    r"(encoder|decoder)\.final_norm\..+": "final norm after the last layer (pre-norm models)",
    r"(encoder|decoder)\.embed_norm\..+": "embedding norm (normalize_embedding)",
    r"decoder\.project_in_dim\..+": "input projection after the decoder embedding",
    r"decoder\.adaptive_softmax\..+": "adaptive softmax output layer",
}

ENCODER_DECODER_MODEL_TYPE: Final = "encoder-decoder"
FAIRSEQ_BOS, FAIRSEQ_PAD, FAIRSEQ_EOS = 0, 1, 2
"""fairseq's dictionary ids (``<s>``, ``<pad>``, ``</s>``); decoding starts from ``</s>``."""


def is_seq2seq_checkpoint(keys: Sequence[str]) -> bool:
    """Whether the keys are an original translation model's (encoder layers and decoder cross-attention)."""
    return any(CROSS_KEY.match(key) for key in keys) and any(key.startswith("encoder.layers.") for key in keys)


@dataclass
class Seq2SeqParts:
    """The converted translation model, before it is laid out for a target."""

    encoder: MegaCoreConfig
    decoder: MegaCoreConfig
    encoder_state: dict[str, Tensor]
    """Our ``MegaModel`` keys (``embedding_layer.*``, ``layers.*``)."""
    decoder_state: dict[str, Tensor]
    """Our ``MegaForCausalLM`` keys (``mega.*``, ``lm_head.*``)."""
    tie_output: bool
    """The output projection is the decoder embedding."""
    share_embeddings: bool
    """Encoder and decoder use one embedding table (``share_all_embeddings``)."""


def _side_args(args: Mapping[str, Any], side: str) -> dict[str, Any]:
    # infer_architecture reads the first present of decoder_/encoder_ names: hide the other side's.
    other = "encoder" if side == "decoder" else "decoder"
    hidden = {f"{other}_chunk_size", f"max_{'source' if other == 'encoder' else 'target'}_positions"}
    return {key: (None if key in hidden else value) for key, value in args.items()}


def _map_cross(rest: str) -> str | None:
    for pattern, replacement in CROSS_KEY_MAP.items():
        if re.fullmatch(pattern, rest):
            return re.sub(rf"^{pattern}$", replacement, rest)
    return None


def _core(state: Mapping[str, Tensor], side: str, num_layers: int, args: Mapping[str, Any], vocab: int) -> MegaCoreConfig:
    causal = side == "decoder"
    try:
        arch = infer_architecture(
            state, prefix=f"{side}.", num_layers=num_layers, causal=causal, args=_side_args(args, side), vocab_size=vocab
        )
    except ValueError as error:
        raise ConversionError(f"the checkpoint's {side} is not a valid MEGA config: {error}") from error
    scale = not bool(arg(args, "no_scale_embedding", default=False))
    return dataclasses.replace(
        arch.core, scale_embeddings=scale, is_decoder=causal, add_cross_attention=causal, pad_token_id=FAIRSEQ_PAD
    )


def split_seq2seq(
    state_dict: Mapping[str, Tensor], original_args: Mapping[str, Any] | None, *, allow_drop: Sequence[str] = ()
) -> Seq2SeqParts:
    """Map every key of an original translation checkpoint; ``ConversionError`` listing what cannot be held
    (keys matching an ``allow_drop`` glob are dropped instead, never a required one)."""
    args = dict(original_args or {})
    sides: dict[str, dict[str, Tensor]] = {"encoder": {}, "decoder": {}}
    layers: dict[str, set[int]] = {"encoder": set(), "decoder": set()}
    embeddings: dict[str, Tensor] = {}
    output_projection: Tensor | None = None
    refused: dict[str, str] = {}
    for key, tensor in state_dict.items():
        if IGNORED.match(key):
            continue
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor = tensor.float()  # fp16/bf16 originals: exact in fp32, and the model then runs in fp32
        side, _, inner = key.partition(".")
        layer = LAYER_KEY.match(key)
        cross = CROSS_KEY.match(key)
        if side not in sides:
            refused[key] = "not part of the encoder or the decoder"
        elif layer and layer["prefix"] == f"{side}." and (target := map_layer_key(layer["rest"])) is not None:
            sides[side][f"layers.{layer['index']}.{target}"] = tensor
            layers[side].add(int(layer["index"]))
        elif cross and (target := _map_cross(cross["rest"])) is not None:
            sides["decoder"][f"layers.{cross['index']}.cross_attn.{target}"] = tensor
        elif inner in EMBEDDING_KEYS:
            embeddings[side] = tensor
        elif side == "decoder" and inner == OUTPUT_PROJECTION_KEY:
            output_projection = tensor
        else:
            why = next((w for pattern, w in UNREPRESENTABLE.items() if re.fullmatch(pattern, key)), None)
            if not any(fnmatch.fnmatchcase(key, pattern) for pattern in allow_drop):
                refused[key] = why or "unknown key (no mapping)"
    if bool(arg(args, "normalize_before", default=False)):
        for side in sides:
            if not any(k.startswith(f"{side}.final_norm.") for k in state_dict):
                refused[f"{side}.final_norm"] = "parameter-free final norm after the last layer (pre-norm models)"
    for side in sides:
        if side not in embeddings:
            refused[f"{side}.embed_tokens.weight"] = "missing: the token embedding"
        if layers[side] != set(range(len(layers[side]))) or not layers[side]:
            refused[f"{side}.layers"] = f"layer indices are not 0..n-1: {sorted(layers[side])}"
    if refused:
        lines = ["cannot convert this fairseq-mega translation checkpoint without losing weights:"]
        lines += [f"    {key}: {why}" for key, why in sorted(refused.items())]
        raise ConversionError("\n".join(lines), unmapped=[], unrepresentable=sorted(refused))

    encoder = _core(state_dict, "encoder", len(layers["encoder"]), args, embeddings["encoder"].shape[0])
    decoder = _core(state_dict, "decoder", len(layers["decoder"]), args, embeddings["decoder"].shape[0])
    decoder = dataclasses.replace(decoder, cross_attention_max_positions=_cross_bias_positions(sides["decoder"], decoder))
    _pad_simple_biases(sides["encoder"], encoder)
    _pad_simple_biases(sides["decoder"], decoder)

    decoder_embedding = embeddings["decoder"]
    tie = output_projection is None or (
        output_projection.shape == decoder_embedding.shape and torch.equal(output_projection, decoder_embedding)
    )
    head = decoder_embedding if output_projection is None else output_projection
    share = embeddings["encoder"].shape == decoder_embedding.shape and torch.equal(embeddings["encoder"], decoder_embedding)
    encoder_state = {"embedding_layer.word_embeddings.weight": embeddings["encoder"], **sides["encoder"]}
    decoder_state = {f"mega.{key}": value for key, value in sides["decoder"].items()}
    decoder_state["mega.embedding_layer.word_embeddings.weight"] = decoder_embedding
    decoder_state["lm_head.weight"] = head
    # The original projection has no bias; HF MegaForCausalLM's head does: zero.
    decoder_state["lm_head.bias"] = torch.zeros(head.shape[0], dtype=head.dtype)
    return Seq2SeqParts(encoder, decoder, encoder_state, decoder_state, tie_output=tie, share_embeddings=share)


def _cross_bias_positions(decoder_state: Mapping[str, Tensor], core: MegaCoreConfig) -> int | None:
    """``cross_attention_max_positions`` for the original's simple cross-attention tables, or None.

    The original sizes them by max(max_source_positions, max_target_positions), whatever the
    chunking; when that is not the self-attention's layout (chunked, or other limits), the decoder
    config carries the size. Every layer must agree.
    """
    sizes = {
        (table.shape[0] + 1) // 2
        for key, table in decoder_state.items()
        if key.endswith("cross_attn.rel_pos_bias.rel_pos_bias")
    }
    if not sizes:
        return None
    if len(sizes) > 1:
        raise ConversionError(f"decoder.layers.*.cross_attn.rel_pos_bias.rel_pos_bias: layers differ in size ({sorted(sizes)})")
    positions = sizes.pop()
    same_layout = not core.use_chunking and positions == core.max_positions
    return None if same_layout else positions


def _pad_simple_biases(state: dict[str, Tensor], core: MegaCoreConfig) -> None:
    """Self-attention simple tables of chunked models go into the head of the 2*max_positions-1 HF table."""
    size = 2 * core.max_positions - 1
    for key, tensor in state.items():
        if key.endswith("mega_layer.rel_pos_bias.rel_pos_bias") and tensor.shape[0] != size:
            table = torch.zeros(size, dtype=tensor.dtype)
            table[: tensor.shape[0]] = tensor
            state[key] = table


def hf_encoder_decoder(parts: Seq2SeqParts) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config.json dict, state dict) of the transformers ``EncoderDecoderModel`` directory."""
    encoder = hf_config_dict(
        parts.encoder, architectures=[ARCHITECTURE_BASE], add_lm_hidden_dense_layer=False,
        bos_token_id=FAIRSEQ_BOS, eos_token_id=FAIRSEQ_EOS,
    )
    decoder = hf_config_dict(
        parts.decoder, architectures=[ARCHITECTURE_CAUSAL_LM], add_lm_hidden_dense_layer=False,
        tie_word_embeddings=parts.tie_output, bos_token_id=FAIRSEQ_BOS, eos_token_id=FAIRSEQ_EOS,
    )
    config = {
        "model_type": ENCODER_DECODER_MODEL_TYPE,
        "architectures": ["EncoderDecoderModel"],
        "is_encoder_decoder": True,
        "encoder": encoder,
        "decoder": decoder,
        "decoder_start_token_id": FAIRSEQ_EOS,
        "bos_token_id": FAIRSEQ_BOS,
        "pad_token_id": FAIRSEQ_PAD,
        "eos_token_id": FAIRSEQ_EOS,
        "tie_encoder_decoder": False,
        # ours (kept by transformers as an extra field): the two token tables were one in the original
        "share_embeddings": parts.share_embeddings,
        "tie_word_embeddings": False,
        "vocab_size": parts.decoder.vocab_size,
    }
    state = {f"encoder.{key}": value for key, value in parts.encoder_state.items()}
    state.update({f"decoder.{key}": value for key, value in parts.decoder_state.items()})
    if parts.tie_output:
        state.pop("decoder.lm_head.weight")  # tied: the decoder embedding is the weight
    return config, state


def convert_seq2seq(
    state_dict: Mapping[str, Tensor], original_args: Mapping[str, Any] | None, *, allow_drop: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """An original translation checkpoint -> (``EncoderDecoderModel`` config dict, state dict)."""
    return hf_encoder_decoder(split_seq2seq(state_dict, original_args, allow_drop=allow_drop))
