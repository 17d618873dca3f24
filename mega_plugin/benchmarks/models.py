"""The two implementations the forward benchmarks compare, built with the same weights.

``ours`` is :class:`~mega_plugin.core.stack.MegaBackbone` with the kernels ``auto`` picks;
``reference`` is transformers' deprecated ``MegaModel`` (transformers 4.57, the fairseq2
environment), loaded with our state dict so both compute the same function on the same inputs.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Final

import torch
from torch import Tensor, nn

from ..core.stack import MegaBackbone
from .common import benchmark_config

IMPLEMENTATIONS: Final = ("ours", "reference")
REFERENCE_MODULE: Final = "transformers.models.deprecated.mega"


def reference_unavailable() -> str | None:
    """Why transformers' deprecated MEGA cannot be benchmarked here, or None."""
    try:
        found = importlib.util.find_spec(REFERENCE_MODULE) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{REFERENCE_MODULE} is not importable (it ships with transformers 4.57)"


def build_model(
    implementation: str, *, chunk_size: int | None, max_length: int, seed: int = 0
) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """(model, forward(tokens) -> (B, L, D) hidden states) for ``implementation``."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}; allowed values: {', '.join(IMPLEMENTATIONS)}")
    config = benchmark_config(chunk_size=chunk_size, causal=False, max_positions=max_length)
    torch.manual_seed(seed)
    ours = MegaBackbone(config)
    if implementation == "ours":
        return ours, lambda tokens: ours(tokens).hidden
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
        bidirectional=True,
        shared_representation_size=config.shared_representation_size,
        use_chunking=chunk_size is not None,
        chunk_size=chunk_size if chunk_size is not None else -1,
        normalization_type="scalenorm",
        relative_positional_bias="rotary",
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        nffn_hidden_size=config.nffn_hidden_size,
        max_positions=max(max_length, config.max_positions),
        is_decoder=False,
    )
    reference = MegaModel(reference_config, add_pooling_layer=False)
    missing, unexpected = reference.load_state_dict(ours.state_dict(), strict=False)
    if unexpected or any(not key.endswith("_float_tensor") for key in missing):
        raise RuntimeError(f"weight transfer to the reference failed: missing={missing}, unexpected={unexpected}")
    return reference, lambda tokens: reference(tokens).last_hidden_state
