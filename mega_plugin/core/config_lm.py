"""The original language models' input and output options: final norm, adaptive input, adaptive softmax.

:class:`LanguageModelOptions` is a base of :class:`~.config.MegaCoreConfig` (its fields are core
fields like any other). Every default switches the option off, so a config without these keys
builds the Hugging Face layout unchanged: one embedding table, one full-vocabulary head, no norm
after the last layer. The original LRA pre-norm encoders (Image, Pathfinder, Path-X) have the same
final norm.

Bands (adaptive input) and clusters (adaptive softmax) follow the original fairseq code: cutoffs
``[c0, c1, ...]`` split the vocabulary into ``[0, c0)``, ``[c0, c1)``, ..., ``[c_last, vocab_size)``
(the last edge is ``vocab_size`` itself when the cutoffs stop short of it); band ``i`` has width
``int(hidden_size // factor ** i)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class LanguageModelOptions:
    """Options of the original facebookresearch/mega language models (WikiText-103, enwik8)."""

    add_final_norm: bool = False
    """Normalise the last layer's output (type ``normalization_type``), as the original pre-norm
    stacks (``--normalize-before``) do. ``False`` is the HF layout."""

    final_norm_affine: bool = True
    """Learn the final norm's affine parameters (``False``: the original's ``--no-affine-final-norm``)."""

    adaptive_input_cutoffs: list[int] | None = None
    """Adaptive input (Baevski & Auli): ascending vocabulary cutoffs of the embedding bands, each
    band an embedding of width ``hidden_size // adaptive_input_factor ** i`` projected to
    ``hidden_size``. ``None``: one embedding table (the HF layout)."""

    adaptive_input_factor: float = 4.0
    """Width ratio between neighbouring adaptive-input bands."""

    adaptive_softmax_cutoffs: list[int] | None = None
    """Adaptive softmax (Grave et al.): ascending vocabulary cutoffs; the head scores the first
    band's words plus one entry per tail cluster. ``None``: a full-vocabulary head (the HF layout)."""

    adaptive_softmax_factor: float = 4.0
    """Width ratio between neighbouring adaptive-softmax clusters."""

    adaptive_softmax_dropout_prob: float = 0.0
    """Dropout on the head's input (training loss) and inside each tail cluster."""

    tie_adaptive_weights: bool = False
    """Share the adaptive-input band embeddings with the adaptive softmax (head words and tail
    outputs); needs equal cutoffs and factors on both sides."""

    tie_adaptive_proj: bool = False
    """Also share the band projections: tail ``i`` projects with band ``i + 1``'s input projection,
    transposed. Needs ``tie_adaptive_weights``."""


def band_edges(cutoffs: Sequence[int], vocab_size: int) -> tuple[int, ...]:
    """Upper edges of the bands: ``cutoffs`` plus ``vocab_size`` when they stop short of it."""
    edges = tuple(int(c) for c in cutoffs)
    return edges if edges[-1] == vocab_size else edges + (vocab_size,)


def band_width(hidden_size: int, factor: float, band: int) -> int:
    """Width of band ``band``: ``int(hidden_size // factor ** band)``, as the original computes it."""
    return int(hidden_size // (factor**band))


def _check_cutoffs(name: str, cutoffs: Any, vocab_size: int) -> None:
    if cutoffs is None:
        return
    if not isinstance(cutoffs, (list, tuple)) or not cutoffs or any(
        isinstance(c, bool) or not isinstance(c, int) for c in cutoffs
    ):
        raise ValueError(f"{name} must be None or a non-empty list of integers, got {cutoffs!r}")
    if any(c <= 0 for c in cutoffs) or any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
        raise ValueError(f"{name} must be strictly ascending positive integers, got {list(cutoffs)}")
    if cutoffs[-1] > vocab_size:
        raise ValueError(f"{name}={list(cutoffs)}: the last cutoff must be at most vocab_size={vocab_size}")
    if len(band_edges(cutoffs, vocab_size)) < 2:
        raise ValueError(
            f"{name}={list(cutoffs)} leaves a single band; allowed values: cutoffs below vocab_size={vocab_size} "
            "(or None for a plain table/head)"
        )


def _check_factor(name: str, factor: Any, hidden_size: int, bands: int) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
        raise ValueError(f"{name} must be a number >= 1, got {factor!r}")
    if band_width(hidden_size, float(factor), bands - 1) < 1:
        raise ValueError(
            f"{name}={factor!r} with {bands} bands makes the last band's width "
            f"hidden_size // factor ** {bands - 1} zero (hidden_size={hidden_size}); use a smaller factor or fewer cutoffs"
        )


def validate_language_model_options(config: Any) -> None:
    """Raise ``ValueError`` naming the field and the allowed values for a bad option."""
    for name in ("add_final_norm", "final_norm_affine", "tie_adaptive_weights", "tie_adaptive_proj"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be true or false, got {getattr(config, name)!r}")
    vocab, hidden = config.vocab_size, config.hidden_size
    for side in ("adaptive_input", "adaptive_softmax"):
        cutoffs = getattr(config, f"{side}_cutoffs")
        _check_cutoffs(f"{side}_cutoffs", cutoffs, vocab)
        bands = len(band_edges(cutoffs, vocab)) if cutoffs is not None else 1
        _check_factor(f"{side}_factor", getattr(config, f"{side}_factor"), hidden, bands)
    dropout = config.adaptive_softmax_dropout_prob
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) <= 1.0:
        raise ValueError(f"adaptive_softmax_dropout_prob must be a probability in [0, 1], got {dropout!r}")
    if config.tie_adaptive_weights:
        problems = []
        if config.adaptive_input_cutoffs is None or config.adaptive_softmax_cutoffs is None:
            problems.append("both adaptive_input_cutoffs and adaptive_softmax_cutoffs set")
        elif list(config.adaptive_input_cutoffs) != list(config.adaptive_softmax_cutoffs):
            problems.append("adaptive_input_cutoffs equal to adaptive_softmax_cutoffs")
        if float(config.adaptive_input_factor) != float(config.adaptive_softmax_factor):
            problems.append("adaptive_input_factor equal to adaptive_softmax_factor")
        if problems:
            raise ValueError("tie_adaptive_weights=True needs " + " and ".join(problems))
    if config.tie_adaptive_proj and not config.tie_adaptive_weights:
        raise ValueError("tie_adaptive_proj=True needs tie_adaptive_weights=True (the projections belong to tied bands)")
