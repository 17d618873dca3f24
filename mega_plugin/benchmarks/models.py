"""The two implementations the benchmarks compare, each built in exactly one function.

``ours`` is :class:`~mega_plugin.core.stack.MegaBackbone` with the kernels ``auto`` picks, built
by :func:`build_ours`; every benchmark that runs our model gets it from there. ``reference``
is transformers' deprecated ``MegaModel`` (transformers 4.57, the fairseq2 environment), built
by :func:`build_reference` and loaded with our state dict so both compute the same function
on the same inputs. ``llama`` is transformers' Llama with as many non-embedding parameters
(:mod:`.llama`): a different function of the same size, the yardstick a user compares against.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Callable, Final, Mapping

import torch
from torch import Tensor, nn

from ..backends import accelerate
from ..core.backbone import MegaBackbone
from ..core.config import MegaCoreConfig
from ..core.presets import PRESETS
from .common import benchmark_config, without_dropout
from .llama import build_equal_llama, non_embedding_parameters

IMPLEMENTATIONS: Final = ("ours", "reference", "llama")
REFERENCE_MODULE: Final = "transformers.models.deprecated.mega"
PAPER_PRESETS: Final = ("wikitext103", "enwik8")
"""The paper's language models that ``--preset`` measures at their training lengths."""


def reference_unavailable() -> str | None:
    """Why transformers' deprecated MEGA cannot be benchmarked here, or None."""
    try:
        found = importlib.util.find_spec(REFERENCE_MODULE) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{REFERENCE_MODULE} is not importable (it ships with transformers 4.57)"


def build_ours(config: MegaCoreConfig) -> MegaBackbone:
    """Our model for ``config``, the one place any benchmark builds it (seed the RNG first).

    The backends are applied as the HF and fairseq2 adapters apply them (``MEGA_PLUGIN_BACKENDS``
    chooses, ``none`` measures the core's reference path).
    """
    model = MegaBackbone(config)
    accelerate(model)
    return model


def build_reference(config: MegaCoreConfig, *, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Transformers' deprecated ``MegaModel`` for ``config`` (bidirectional), holding ``state_dict``.

    ``state_dict`` is the state dict of our model for the same ``config`` (:func:`build_ours`):
    both implementations then hold the same weights.
    """
    reason = reference_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    from transformers.models.deprecated.mega import MegaConfig, MegaModel

    reference_config = MegaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        intermediate_size=config.intermediate_size,
        ema_projection_size=config.ema_projection_size,
        bidirectional=config.bidirectional,
        shared_representation_size=config.shared_representation_size,
        use_chunking=config.use_chunking,
        chunk_size=config.chunk_size,
        normalization_type=config.normalization_type,
        norm_affine=config.norm_affine,
        normalize_before_mega=config.normalize_before_mega,
        normalize_before_ffn=config.normalize_before_ffn,
        relative_positional_bias=config.relative_positional_bias,
        activation=config.activation,
        attention_activation=config.attention_activation,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        nffn_hidden_size=config.nffn_hidden_size,
        max_positions=config.max_positions,
        is_decoder=config.is_decoder,
        use_cache=False,
    )
    reference = MegaModel(reference_config, add_pooling_layer=False)
    missing, unexpected = reference.load_state_dict(state_dict, strict=False)
    if unexpected or any(not key.endswith("_float_tensor") for key in missing):
        raise RuntimeError(f"weight transfer to the reference failed: missing={missing}, unexpected={unexpected}")
    return reference


def case_config(*, chunk_size: int | None, max_length: int, preset: str | None = None) -> MegaCoreConfig:
    """The measured architecture: the issue's benchmark model (bidirectional), or a paper preset.

    A preset keeps its layers, widths, chunk, norms and causality; its vocabulary becomes the
    benchmark's (the paper's embedding tables and adaptive softmax are not what is compared, nor
    its final norm, embedding scale and EMA truncation, which the reference lacks) and its
    dropout is off, as everywhere in the benchmarks.
    """
    if preset is None:
        return benchmark_config(chunk_size=chunk_size, causal=False, max_positions=max_length)
    if preset not in PAPER_PRESETS:
        raise ValueError(f"preset={preset!r}; allowed values: {', '.join(PAPER_PRESETS)}")
    config = PRESETS[preset]()
    return dataclasses.replace(
        without_dropout(config),
        vocab_size=benchmark_config(chunk_size=None, causal=False).vocab_size,
        max_positions=max(max_length, config.chunk_size),
        adaptive_input_cutoffs=None,
        adaptive_softmax_cutoffs=None,
        tie_adaptive_weights=False,
        tie_adaptive_proj=False,
        add_final_norm=False,
        scale_embeddings=False,
        truncation=None,
    )


def enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing of every block of any of the three implementations."""
    if isinstance(model, MegaBackbone):
        model.layers.set_checkpointing(True)
    else:  # transformers' Llama and deprecated MEGA
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build_model(
    implementation: str, *, chunk_size: int | None, max_length: int, seed: int = 0, preset: str | None = None
) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """(model, forward(tokens) -> (B, L, D) hidden states) for ``implementation``."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}; allowed values: {', '.join(IMPLEMENTATIONS)}")
    config = case_config(chunk_size=chunk_size, max_length=max_length, preset=preset)
    torch.manual_seed(seed)
    ours = build_ours(config)
    if implementation == "ours":
        return ours, lambda tokens: ours(tokens).hidden
    if implementation == "llama":
        llama = build_equal_llama(
            config, mega_parameters=non_embedding_parameters(ours), max_length=max_length, causal_lm=False
        )
        return llama, lambda tokens: llama(tokens).last_hidden_state
    reference = build_reference(config, state_dict=ours.state_dict())
    return reference, lambda tokens: reference(tokens).last_hidden_state
