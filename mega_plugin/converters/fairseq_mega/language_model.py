"""The original language models' own parts: final norm, adaptive input, adaptive softmax.

Source keys (after ``decoder.``) -> HF keys:

- ``final_norm.norm.{weight,bias,scalar,...}`` -> ``mega.final_norm.norm.*`` (``add_final_norm``;
  a pre-norm model trained with ``--no-affine-final-norm`` has the norm but no tensors);
- ``embed_tokens.embeddings.{i}.0.weight`` / ``.1.weight`` (band table / projection) ->
  ``mega.embedding_layer.word_embeddings.bands.{i}.weight`` / ``.projections.{i}.weight``;
- ``adaptive_softmax.head.weight`` (untied: word rows, then one row per cluster) ->
  ``adaptive_softmax.head_words.weight`` + ``adaptive_softmax.head_clusters.weight``;
  ``adaptive_softmax.head.class_proj.weight`` (tied) -> ``adaptive_softmax.head_clusters.weight``;
- ``adaptive_softmax.tail.{i}.0.weight`` -> ``adaptive_softmax.tail_projections.{i}.weight``,
  ``adaptive_softmax.tail.{i}.2.weight`` -> ``adaptive_softmax.tail_outputs.{i}.weight``,
  unless tied: a tied tensor is the adaptive input's own (checked equal, then left out).

Sizes come from the tensors (band sizes give the cutoffs); factors and flags from the args,
checked against the tensors. Every mismatch is a :class:`ConversionError` naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Mapping

import torch
from torch import Tensor

from ...core.config_lm import band_width
from ...registry.records import ConversionError
from .config import arg

HF_FINAL_NORM: Final = "mega.final_norm."
HF_INPUT: Final = "mega.embedding_layer.word_embeddings."
BAND_KEY: Final = re.compile(r"embed_tokens\.embeddings\.(\d+)\.([01])\.weight")
TAIL_KEY: Final = re.compile(r"adaptive_softmax\.tail\.(\d+)\.([02])\.weight")
BOOKKEEPING: Final = re.compile(r"(embed_tokens|adaptive_softmax\.head)\._float_tensor")


@dataclass
class LanguageModelParts:
    """What :func:`language_model_parts` found: core fields, mapped tensors, consumed source keys."""

    fields: dict[str, Any] = field(default_factory=dict)
    mapped: dict[str, Tensor] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)
    vocab_size: int | None = None
    """The vocabulary the adaptive input covers (no single embedding table then)."""


def _cutoffs(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [int(part) for part in value.replace("[", "").replace("]", "").split(",") if part.strip()]
    return [int(part) for part in value]


def _same(key: str, tensor: Tensor, owner: str, owned: Tensor, transposed: bool = False) -> None:
    expected = owned.t() if transposed else owned
    if tensor.shape != expected.shape or not torch.equal(tensor, expected):
        raise ConversionError(f"{key} should be tied to {owner} (--tie-adaptive-*) but holds other values")


def language_model_parts(
    state: Mapping[str, Tensor], args: Mapping[str, Any], *, prefix: str, hidden: int, vocab_size: int | None
) -> LanguageModelParts:
    """Map the final norm, adaptive input and adaptive softmax of an original LM checkpoint
    (``vocab_size``: the single embedding table's rows, or None with adaptive input)."""
    parts = LanguageModelParts()
    inner = {key[len(prefix):]: key for key in state if key.startswith(prefix)}
    for rest, key in inner.items():
        if BOOKKEEPING.fullmatch(rest):
            parts.consumed.add(key)
    _final_norm(state, args, inner, parts, prefix)
    bands = _adaptive_input(state, args, inner, parts, hidden)
    _adaptive_softmax(state, args, inner, parts, bands, parts.vocab_size or vocab_size)
    return parts


def _final_norm(state: Mapping[str, Tensor], args: Mapping[str, Any], inner: dict[str, str], parts: LanguageModelParts, prefix: str) -> None:
    norm_keys = [rest for rest in inner if rest.startswith("final_norm.")]
    prenorm = arg(args, "normalize_before", "decoder_normalize_before")
    if not norm_keys and not prenorm:
        return
    parts.fields.update(add_final_norm=True, final_norm_affine=bool(norm_keys))
    if arg(args, "no_affine_final_norm") is not None and bool(args["no_affine_final_norm"]) == bool(norm_keys):
        raise ConversionError(
            f"args say no_affine_final_norm={args['no_affine_final_norm']} but the checkpoint has "
            f"{'affine' if norm_keys else 'no'} {prefix}final_norm tensors"
        )
    for rest in norm_keys:
        parts.mapped[HF_FINAL_NORM + rest[len("final_norm."):]] = state[inner[rest]]
        parts.consumed.add(inner[rest])


def _adaptive_input(
    state: Mapping[str, Tensor], args: Mapping[str, Any], inner: dict[str, str], parts: LanguageModelParts, hidden: int
) -> list[tuple[Tensor, Tensor]]:
    found: dict[int, dict[str, Tensor]] = {}
    for rest, key in inner.items():
        match = BAND_KEY.fullmatch(rest)
        if match:
            found.setdefault(int(match[1]), {})[match[2]] = state[key]
            parts.consumed.add(key)
    if not found:
        return []
    if sorted(found) != list(range(len(found))) or any(len(v) != 2 for v in found.values()):
        raise ConversionError(f"adaptive input bands are incomplete: found {sorted(found)} (need table and projection each)")
    factor = float(arg(args, "adaptive_input_factor", default=4.0))
    bands, edges, start = [], [], 0
    for index in range(len(found)):
        table, projection = found[index]["0"], found[index]["1"]
        width = band_width(hidden, factor, index)
        if table.shape[1] != width or projection.shape != (hidden, width):
            raise ConversionError(
                f"adaptive input band {index}: table {tuple(table.shape)}, projection {tuple(projection.shape)} "
                f"do not match hidden_size={hidden} and adaptive_input_factor={factor} (width {width})"
            )
        parts.mapped[f"{HF_INPUT}bands.{index}.weight"] = table
        parts.mapped[f"{HF_INPUT}projections.{index}.weight"] = projection
        bands.append((table, projection))
        start += table.shape[0]
        edges.append(start)
    declared = _cutoffs(arg(args, "adaptive_input_cutoff"))
    if declared is not None and declared not in (edges[:-1], edges):
        raise ConversionError(f"args say adaptive_input_cutoff={declared} but the band tables end at {edges}")
    parts.fields.update(adaptive_input_cutoffs=edges[:-1], adaptive_input_factor=factor)
    parts.vocab_size = edges[-1]
    return bands


def _adaptive_softmax(
    state: Mapping[str, Tensor],
    args: Mapping[str, Any],
    inner: dict[str, str],
    parts: LanguageModelParts,
    bands: list[tuple[Tensor, Tensor]],
    vocab: int | None,
) -> None:
    if not any(rest.startswith("adaptive_softmax.") for rest in inner):
        return
    declared = _cutoffs(arg(args, "adaptive_softmax_cutoff"))
    if declared is None:
        raise ConversionError("the checkpoint has an adaptive softmax but its args name no adaptive_softmax_cutoff")
    tie_weights = bool(arg(args, "tie_adaptive_weights", default=False))
    tie_proj = bool(arg(args, "tie_adaptive_proj", default=False)) and tie_weights
    if tie_weights and not bands:
        raise ConversionError("tie_adaptive_weights is set but the checkpoint has no adaptive input bands")
    factor = float(arg(args, "adaptive_softmax_factor", default=4.0))
    head_key = inner.get("adaptive_softmax.head.weight") or inner.get("adaptive_softmax.head.class_proj.weight")
    if head_key is None:
        raise ConversionError("adaptive softmax without a head (adaptive_softmax.head.weight or head.class_proj.weight)")
    clusters = len(declared) if vocab is None or declared[-1] < vocab else len(declared) - 1
    if "adaptive_softmax.head.weight" in inner:  # untied: word rows, then cluster rows
        head = state[head_key]
        words = head.shape[0] - clusters
        parts.mapped["adaptive_softmax.head_words.weight"] = head[:words]
        parts.mapped["adaptive_softmax.head_clusters.weight"] = head[words:]
    else:
        parts.mapped["adaptive_softmax.head_clusters.weight"] = state[head_key]
        tied_words = inner.get("adaptive_softmax.head.word_proj.weight")
        if tied_words is None:
            raise ConversionError("tied adaptive softmax head without head.word_proj.weight (an input projection "
                                  "before the tied head is not supported)")
        _same(tied_words, state[tied_words], "adaptive input band 0", bands[0][0])
        parts.consumed.add(tied_words)
    parts.consumed.add(head_key)
    for rest, key in inner.items():
        match = TAIL_KEY.fullmatch(rest)
        if not match:
            continue
        index, part = int(match[1]), match[2]
        parts.consumed.add(key)
        if part == "0" and tie_proj:
            _same(key, state[key], f"adaptive input band {index + 1}'s projection", bands[index + 1][1])
        elif part == "2" and tie_weights:
            _same(key, state[key], f"adaptive input band {index + 1}", bands[index + 1][0])
        else:
            name = "tail_projections" if part == "0" else "tail_outputs"
            parts.mapped[f"adaptive_softmax.{name}.{index}.weight"] = state[key]
    parts.fields.update(
        adaptive_softmax_cutoffs=declared if vocab is None or declared[-1] < vocab else declared[:-1],
        adaptive_softmax_factor=factor,
        adaptive_softmax_dropout_prob=float(arg(args, "adaptive_softmax_dropout", default=0.0)),
        tie_adaptive_weights=tie_weights,
        tie_adaptive_proj=tie_proj,
    )
