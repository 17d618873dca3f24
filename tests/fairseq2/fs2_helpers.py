"""Helpers of the fairseq2 adapter tests (configs, model builders)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytest
import torch

def require_fairseq2() -> None:
    """Skip the calling test module when the fairseq2 distribution is not installed.

    Checked through the installed distribution, not ``import fairseq2``: with ``tests/`` on
    ``sys.path`` this very folder is importable as a namespace package named ``fairseq2``.
    """
    try:
        version("fairseq2")
    except PackageNotFoundError:
        pytest.skip("fairseq2 is not installed (the fairseq2 environment runs these tests)", allow_module_level=True)


TINY_HF: dict[str, Any] = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=48,
    nffn_hidden_size=40,
    ema_projection_size=4,
    shared_representation_size=16,
    is_decoder=True,
    bidirectional=False,
    use_chunking=True,
    chunk_size=8,
    max_positions=64,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
)
"""A tiny causal HF MEGA config (chunked so decoding crosses chunk boundaries)."""

UNTIED_HF: dict[str, Any] = dict(
    TINY_HF,
    tie_word_embeddings=False,
    add_lm_hidden_dense_layer=False,
    normalization_type="layernorm",
    relative_positional_bias="simple",
    use_chunking=False,
    chunk_size=-1,
    truncation=6,
    add_token_type_embeddings=True,
)
"""A second layout: untied head, no dense, simple bias, truncated EMA, token-type row."""


@dataclass
class Fs2Assets:
    """HF directories written for the session and the card names that point at them."""

    root: Path
    hf_dirs: dict[str, Path]
    """Card name -> HF MEGA directory."""

    reference_available: bool


def perturb_(model: torch.nn.Module, seed: int, *, scale: float = 0.05) -> torch.nn.Module:
    """Add noise to every parameter so no test passes on symmetric initial values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


def build_model(config: Any, seed: int = 0, *, scale: float = 0.05) -> Any:
    """A ``MegaCausalLM`` with perturbed weights (noise std ``scale``), in eval mode."""
    from mega_plugin.adapters.fairseq2.factory import create_mega_model

    torch.manual_seed(seed)
    return perturb_(create_mega_model(config), seed, scale=scale)
