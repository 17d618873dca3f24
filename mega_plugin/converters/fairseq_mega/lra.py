"""Original LRA classifiers (facebookresearch/mega ``fairseq/models/lra``) -> an HF classification directory.

Key map (besides the per-layer map of :mod:`.keys`, under ``encoder.encoder.``):

- ``embed_tokens.embed.weight`` (V, D) -> ``mega.embedding_layer.word_embeddings.weight``, with
  the padding row zeroed: the original multiplies padded positions' embeddings by zero, so the
  row never reaches its output, and a zero row gives the same zeros;
- ``embed_tokens.{weight, bias}`` (D,) (real-number / pixel input) ->
  ``mega.embedding_layer.real_number_embeddings.{weight, bias}`` (``input_type='real_numbers'``);
- ``final_norm.*`` (pre-norm stacks) -> ``mega.final_norm.*`` (``add_final_norm``);
- ``classifier.{i}.0.{weight, bias}`` -> ``classifier.layers.{i}.*``;
  ``sentence_projection_layer.weight`` -> ``classifier.out_proj.weight`` (``classifier_style='lra'``).

The head's options come from the tensors (layers, width, pair input: the first layer reads 2D) and
the args (``sen_rep_type`` -> ``classifier_pooling``, ``classifier_activation_fn``);
``embed_norm.*`` (``--normalize-embedding``) -> ``mega.embedding_layer.embedding_norm.*``
(``normalize_embeddings``). fp16/bf16 tensors are widened to fp32 (exact). What the target cannot
hold (``use_p``, unknown keys) is refused with one message.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
from typing import Any, Final, Mapping, Sequence

import torch
from torch import Tensor

from ...core.config_lra import CLASSIFIER_ACTIVATIONS
from ...formats.hf import HF_PREFIX, hf_config_dict
from ...registry.records import ConversionError
from .config import arg, architecture_errors, infer_architecture, log_notes
from .keys import IGNORED, LAYER_KEY, map_layer_key, model_prefix

logger = logging.getLogger("mega_plugin.registry.convert")

LRA_PREFIX: Final = "encoder.encoder."
"""Where the original LRA model keeps its MEGA encoder (``LRAModel.encoder.encoder``)."""

POOLINGS: Final = {"mp": "mean", "cls": "first"}
"""The original ``sen_rep_type`` -> ``classifier_pooling``."""

_CLASSIFIER_KEY: Final = re.compile(r"^classifier\.(?P<index>\d+)\.0\.(?P<name>weight|bias)$")
_HEAD_OUT: Final = "sentence_projection_layer.weight"


def is_lra_checkpoint(keys: Sequence[str]) -> bool:
    """True for an original LRA model: MEGA layers under ``encoder.encoder.``."""
    return any(key.startswith(f"{LRA_PREFIX}layers.") for key in keys)


@dataclasses.dataclass
class _Parts:
    mapped: dict[str, Tensor]
    token_table: Tensor | None = None
    real_numbers: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    final_norm: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    embed_norm: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    head_layers: dict[int, dict[str, Tensor]] = dataclasses.field(default_factory=dict)
    head_out: Tensor | None = None
    dropped: list[str] = dataclasses.field(default_factory=list)


def _split(state: Mapping[str, Tensor], allow_drop: Sequence[str]) -> _Parts:
    parts = _Parts(mapped={})
    unmapped: list[str] = []
    dropped = parts.dropped
    for key, tensor in state.items():
        if IGNORED.match(key):
            continue
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in allow_drop):
            dropped.append(key)
            continue
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()  # fp16/bf16 originals: exact in fp32, and the model then runs in fp32
        inner = key[len(LRA_PREFIX):] if key.startswith(LRA_PREFIX) else None
        layer = LAYER_KEY.match(key)
        head = _CLASSIFIER_KEY.match(key)
        if layer and layer["prefix"] == LRA_PREFIX and (target := map_layer_key(layer["rest"])) is not None:
            parts.mapped[f"{HF_PREFIX}layers.{layer['index']}.{target}"] = tensor
        elif inner == "embed_tokens.embed.weight" and tensor.dim() == 2:
            parts.token_table = tensor
        elif inner in ("embed_tokens.weight", "embed_tokens.bias") and tensor.dim() == 1:
            parts.real_numbers[inner.rsplit(".", 1)[1]] = tensor
        elif inner is not None and inner.startswith("final_norm."):
            parts.final_norm[inner[len("final_norm."):].removeprefix("norm.")] = tensor
        elif inner is not None and inner.startswith("embed_norm."):
            parts.embed_norm[inner[len("embed_norm."):].removeprefix("norm.")] = tensor
        elif head:
            parts.head_layers.setdefault(int(head["index"]), {})[head["name"]] = tensor
        elif key == _HEAD_OUT:
            parts.head_out = tensor
        else:
            unmapped.append(key)
    if unmapped:
        lines = ["cannot convert this original LRA checkpoint without losing weights:"]
        lines += [f"  {key}: unknown key (no mapping)" for key in sorted(unmapped)]
        lines.append("drop them explicitly with --allow-drop PATTERN (a glob on the source key, repeatable)")
        raise ConversionError("\n".join(lines), unmapped=sorted(unmapped), unrepresentable=[])
    if dropped:
        logger.warning("dropping %d key(s) as allowed by --allow-drop: %s", len(dropped), ", ".join(sorted(dropped)))
    return parts


def _head_options(parts: _Parts, args: Mapping[str, Any], hidden: int) -> tuple[dict[str, Any], int] | None:
    """The core's classifier fields and num_labels, or None when the head was dropped entirely."""
    if parts.head_out is None and not parts.head_layers:
        return None
    if parts.head_out is None:
        raise ConversionError(f"the LRA classifier has layers but no output projection ({_HEAD_OUT})")
    indices = sorted(parts.head_layers)
    if indices != list(range(len(indices))) or any(set(p) != {"weight", "bias"} for p in parts.head_layers.values()):
        raise ConversionError(f"the LRA classifier layers are incomplete: found classifier.{indices}.0.(weight|bias)")
    inputs = parts.head_layers[0]["weight"].shape[1] if indices else parts.head_out.shape[1]
    if inputs not in (hidden, 2 * hidden):
        raise ConversionError(
            f"the LRA classifier reads {inputs} features; expected hidden_size={hidden} (one sequence) "
            f"or {2 * hidden} (a retrieval pair)"
        )
    rep = arg(args, "sen_rep_type", default="mp")
    if rep not in POOLINGS:
        raise ConversionError(f"sen_rep_type={rep!r} is not supported; allowed values: {', '.join(POOLINGS)}")
    if arg(args, "use_p", default=False):
        raise ConversionError("use_p=True (predicting from the attention weights) is not supported; allowed values: False")
    activation = arg(args, "classifier_activation_fn", default="gelu")
    if activation not in CLASSIFIER_ACTIVATIONS:
        raise ConversionError(
            f"classifier_activation_fn={activation!r} is not supported; allowed values: {', '.join(CLASSIFIER_ACTIVATIONS)}"
        )
    options = dict(
        classifier_style="lra",
        classifier_pooling=POOLINGS[rep],
        classifier_layers=len(indices),
        classifier_hidden_size=parts.head_out.shape[1] if indices else None,
        classifier_activation=activation,
        classifier_dual_input=inputs == 2 * hidden,
    )
    return options, parts.head_out.shape[0]


def convert_lra(
    state_dict: Mapping[str, Tensor], original_args: Mapping[str, Any] | None, *, allow_drop: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Original LRA (or raw speech-commands) checkpoint -> (HF config dict, HF state dict) of a
    ``MegaForSequenceClassification`` (token or audio-sample input) or ``MegaForImageClassification``
    (``--input-type image`` pixels); a bare ``MegaModel`` when the whole head is dropped with ``allow_drop``."""
    args = dict(original_args or {})
    prefix, num_layers = model_prefix(list(state_dict))
    parts = _split(state_dict, allow_drop)
    real_numbers = bool(parts.real_numbers)
    if real_numbers == (parts.token_table is not None):
        raise ConversionError(
            "expected exactly one input embedding: encoder.encoder.embed_tokens.embed.weight (tokens) "
            "or encoder.encoder.embed_tokens.{weight, bias} (real numbers)"
        )
    if real_numbers and set(parts.real_numbers) != {"weight", "bias"}:
        raise ConversionError("the real-number embedding needs both encoder.encoder.embed_tokens.weight and .bias")
    vocab = 1 if real_numbers else parts.token_table.shape[0]
    with architecture_errors():
        arch = infer_architecture(state_dict, prefix=prefix, num_layers=num_layers, causal=False, args=args, vocab_size=vocab)
        core = arch.core
        head = _head_options(parts, args, core.hidden_size)
        lra_fields: dict[str, Any] = dict(head[0]) if head else {}
        lra_fields["embedding_dropout_prob"] = float(arg(args, "dropout", default=0.0))  # the encoder's embedding_dropout
        if parts.embed_norm or arg(args, "normalize_embedding", default=False):
            if not {"weight", "scalar"} & set(parts.embed_norm):
                raise ConversionError(
                    f"--normalize-embedding: the embedding norm's affine tensors ({LRA_PREFIX}embed_norm.*) are missing"
                )
            lra_fields["normalize_embeddings"] = True
        if real_numbers:
            lra_fields.update(input_type="real_numbers", pad_token_id=None)  # no token table, no padding id
        if parts.final_norm:
            lra_fields.update(add_final_norm=True, final_norm_affine=bool({"weight", "scalar"} & set(parts.final_norm)))
        elif core.normalize_before_mega and not any(k.startswith(f"{LRA_PREFIX}final_norm.") for k in parts.dropped):
            raise ConversionError(
                f"the pre-norm LRA encoder has no final norm ({LRA_PREFIX}final_norm.*); the original always "
                "builds one after pre-norm layers (drop it explicitly with --allow-drop to convert without it)"
            )
        core = dataclasses.replace(core, **lra_fields)
    log_notes(arch)
    from .convert import _resize_simple_bias  # the one place that re-sizes the simple bias tables

    mapped = parts.mapped
    _resize_simple_bias(mapped, core.max_positions, arch.original_bias_positions)
    if real_numbers:
        for name, tensor in parts.real_numbers.items():
            mapped[f"{HF_PREFIX}embedding_layer.real_number_embeddings.{name}"] = tensor
    else:
        table = parts.token_table.clone()
        table[core.pad_token_id] = 0  # never read by the original (padded embeddings are zeroed)
        mapped[f"{HF_PREFIX}embedding_layer.word_embeddings.weight"] = table
    for name, tensor in parts.final_norm.items():
        mapped[f"{HF_PREFIX}final_norm.norm.{name}"] = tensor
    for name, tensor in parts.embed_norm.items():
        mapped[f"{HF_PREFIX}embedding_layer.embedding_norm.norm.{name}"] = tensor
    hf_fields: dict[str, Any] = {"add_lm_hidden_dense_layer": False}
    if real_numbers:
        hf_fields.update(bos_token_id=None, eos_token_id=None)  # pixels have no special tokens
    architecture = "MegaModel"
    if head is not None:
        for index, layer in parts.head_layers.items():
            for name, tensor in layer.items():
                mapped[f"classifier.layers.{index}.{name}"] = tensor
        mapped["classifier.out_proj.weight"] = parts.head_out
        labels = head[1]
        hf_fields.update(
            id2label={str(i): f"LABEL_{i}" for i in range(labels)},
            label2id={f"LABEL_{i}": i for i in range(labels)},
            classifier_dropout=float(arg(args, "dropout", default=0.0)),
        )
        image = real_numbers and arg(args, "input_type") == "image"  # LRA pixels; speech commands: audio samples
        architecture = "MegaForImageClassification" if image else "MegaForSequenceClassification"
    return hf_config_dict(core, architectures=[architecture], **hf_fields), mapped
