"""Architecture of an original facebookresearch/mega checkpoint: from its tensors and its args.

Sizes come from the tensors (they are the truth); what tensors cannot tell (activations,
pre/post-norm, chunking, truncation) comes from the checkpoint's ``args``/``cfg`` entry, read
under the names the language-model (``decoder_*``, ``normalize_before``) and LRA
(``encoder_*``, ``norm_type``, ``encoder_normalize_before``) models use. Every assumption made
without args is returned as a note so the converter can log it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from torch import Tensor

from ...core.config import MegaCoreConfig
from ...registry.records import ConversionError

logger = logging.getLogger("mega_plugin.registry.convert")


def arg(args: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The first of ``names`` present (and not None) in ``args``, else ``default``."""
    for name in names:
        if args.get(name) is not None:
            return args[name]
    return default


@dataclass
class Architecture:
    """What the converter needs besides the key map."""

    core: MegaCoreConfig
    """The backend-neutral config of the converted model."""

    original_bias_positions: int | None
    """Length P of the original simple bias (2P - 1 values), or None (rotary)."""

    scale_embeddings: bool
    """Whether the original multiplied token embeddings by sqrt(hidden_size)."""

    notes: list[str] = field(default_factory=list)
    """Assumptions made because the original args did not say."""


def _norm_params(state: Mapping[str, Tensor], layer: str) -> set[str]:
    base = f"{layer}mega_layer.norm."
    return {key[len(base):].removeprefix("norm.") for key in state if key.startswith(base)}


def _norm_type(params: set[str], args: Mapping[str, Any], notes: list[str]) -> tuple[str, bool]:
    declared = arg(args, "normalization_type", "norm_type")
    if "running_mean" in params:
        detected = "syncbatchnorm" if declared == "syncbatchnorm" else "batchnorm"
    elif "scalar" in params:
        detected = "scalenorm"
    elif {"weight", "bias"} <= params:
        detected = "layernorm"
    elif params == {"weight"}:
        detected = "rmsnorm"
    else:
        detected = None
    if detected is None:
        if declared is None:
            notes.append("norm type unknown (no affine parameters, no args): assuming layernorm")
        detected = declared or "layernorm"
    elif declared is not None and declared != detected:
        notes.append(f"args say norm type {declared!r} but the tensors hold {detected!r}: using {detected!r}")
    affine = bool(params & {"weight", "scalar"})
    return detected, affine


def infer_architecture(
    state: Mapping[str, Tensor],
    *,
    prefix: str,
    num_layers: int,
    causal: bool,
    args: Mapping[str, Any],
    vocab_size: int,
) -> Architecture:
    """Build the :class:`MegaCoreConfig` of the checkpoint whose layers live under ``prefix``."""
    notes: list[str] = []
    layer = f"{prefix}layers.0."
    try:
        v_weight = state[f"{layer}mega_layer.v_proj.weight"]
        qk_weight = state[f"{layer}mega_layer.gamma"]
        damping = state[f"{layer}mega_layer.move.delta"]
    except KeyError as error:
        raise ConversionError(f"layer 0 lacks a required tensor: {error.args[0]}") from None
    hidden, intermediate = v_weight.shape[1], v_weight.shape[0]
    channels, ema_size = damping.shape[0], damping.shape[1]
    bidirectional = channels == 2 * hidden
    fc1 = state.get(f"{layer}nffn.fc1.weight")
    norm_type, affine = _norm_type(_norm_params(state, layer), args, notes)

    normalize_before = arg(args, "normalize_before", "encoder_normalize_before", "decoder_normalize_before")
    if normalize_before is None:
        normalize_before = any(key.startswith(f"{prefix}final_norm.") for key in state)
        notes.append(f"pre-norm not in args: inferred {normalize_before} from the presence of a final norm")
    attention = arg(args, "attention_activation_fn")
    if attention is None:
        notes.append("attention function not in args: assuming softmax")
    chunk = int(arg(args, "decoder_chunk_size", "encoder_chunk_size", "chunk_size", default=-1))
    truncation = arg(args, "truncation_length")
    if "truncation_length" not in args:
        notes.append("EMA truncation not in args: assuming none")
    truncation = int(truncation) if truncation is not None and int(truncation) > 0 else None

    simple = state.get(f"{layer}mega_layer.rel_pos_bias.rel_pos_bias")
    declared_positions = arg(args, "max_target_positions", "max_source_positions", "max_positions")
    original_positions = None
    if simple is not None:
        original_positions = (simple.shape[0] + 1) // 2
        if chunk > 0:
            if original_positions != chunk:
                raise ConversionError(
                    f"simple bias holds {simple.shape[0]} values (2 * {original_positions} - 1) "
                    f"but the args say chunk size {chunk}"
                )
            max_positions = max(int(declared_positions or chunk), chunk)
        else:
            max_positions = original_positions
    else:
        max_positions = max(int(declared_positions or 2048), chunk)

    core = MegaCoreConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        intermediate_size=intermediate,
        ema_projection_size=ema_size,
        bidirectional=bidirectional,
        shared_representation_size=qk_weight.shape[1],
        use_chunking=chunk > 0,
        chunk_size=chunk if chunk > 0 else -1,
        truncation=truncation,
        normalize_before_mega=bool(normalize_before),
        normalize_before_ffn=bool(normalize_before),
        normalization_type=norm_type,
        norm_affine=affine,
        activation=arg(args, "activation_fn", default="silu"),
        attention_activation=attention or "softmax",
        dropout_prob=float(arg(args, "dropout", default=0.1)),
        hidden_dropout_prob=float(arg(args, "hidden_dropout", "act_dropout", default=0.0)),
        attention_probs_dropout_prob=float(arg(args, "attention_dropout", default=0.0)),
        nffn_activation_dropout_prob=float(arg(args, "activation_dropout", "act_dropout", default=0.0)),
        use_feature_dropout=bool(arg(args, "feature_dropout", default=False)),
        use_normalized_ffn=fc1 is not None,
        nffn_hidden_size=fc1.shape[0] if fc1 is not None else 2 * hidden,
        max_positions=max_positions,
        relative_positional_bias="simple" if simple is not None else "rotary",
        pad_token_id=1,
        is_decoder=causal,
    )
    scale = causal and not bool(arg(args, "no_scale_embedding", default=False))
    return Architecture(core=core, original_bias_positions=original_positions, scale_embeddings=scale, notes=notes)


@contextlib.contextmanager
def architecture_errors() -> Iterator[None]:
    """Around building a core config from a checkpoint: a ``ValueError`` from the config's own
    checks becomes one :class:`ConversionError`; a ``ConversionError`` passes as it is."""
    try:
        yield
    except ConversionError:
        raise
    except ValueError as error:
        raise ConversionError(f"the checkpoint's architecture is not a valid MEGA config: {error}") from error


def log_notes(architecture: Architecture) -> None:
    """What the architecture inferred or assumed, as warnings."""
    for note in architecture.notes:
        logger.warning("fairseq-mega: %s", note)
