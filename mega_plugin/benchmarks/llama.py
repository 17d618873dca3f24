"""An equal-size Llama: the Transformer every MEGA speed figure is set beside.

"Faster than the reference MEGA" only says how slow transformers' deprecated copy is; a user
choosing an architecture compares against a modern Transformer. This builds transformers'
own Llama (SDPA attention, its own cache) with the benchmark model's width, depth and
vocabulary and the same number of non-embedding parameters: the MLP width is solved for so
that the two models do the same amount of weight work per token.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from torch import nn

from ..core.config import MegaCoreConfig

LLAMA_HEAD_SIZE: Final = 64


def llama_unavailable() -> str | None:
    """Why transformers' Llama cannot be built here, or None."""
    if importlib.util.find_spec("transformers") is None:
        return "transformers is not installed (the Llama comparison needs it)"
    return None


def non_embedding_parameters(model: nn.Module) -> int:
    """Parameters outside the token embeddings and the output projection tied to them."""
    seen: set[int] = set()
    total = 0
    for name, parameter in model.named_parameters():
        if "embed" in name or "lm_head" in name or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total


def matching_mlp_width(config: MegaCoreConfig, *, mega_layer_parameters: int) -> int:
    """The Llama MLP width whose layer has ``mega_layer_parameters`` parameters.

    A Llama layer holds q, k, v, o (4 D^2), gate/up/down (3 D F) and two RMSNorm scales (2 D).
    """
    d = config.hidden_size
    width = (mega_layer_parameters - 4 * d * d - 2 * d) / (3 * d)
    if width < 1:
        raise ValueError(f"a MEGA layer of {mega_layer_parameters} parameters is smaller than Llama's attention at width {d}")
    return round(width)


def build_equal_llama(config: MegaCoreConfig, *, mega_parameters: int, max_length: int, causal_lm: bool) -> nn.Module:
    """transformers' Llama (SDPA) matching ``config``'s width, depth, vocabulary and
    ``mega_parameters`` non-embedding parameters; ``LlamaForCausalLM`` when ``causal_lm``."""
    reason = llama_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    if config.hidden_size % LLAMA_HEAD_SIZE:
        raise ValueError(f"hidden_size={config.hidden_size} must be a multiple of {LLAMA_HEAD_SIZE} for the Llama")
    heads = config.hidden_size // LLAMA_HEAD_SIZE
    llama_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=matching_mlp_width(config, mega_layer_parameters=mega_parameters // config.num_hidden_layers),
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_length,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    model_class = LlamaForCausalLM if causal_lm else LlamaModel
    return model_class(llama_config)
