"""The Llama beside MEGA has MEGA's width, depth and vocabulary and as many non-embedding
parameters (within one MLP column), and runs transformers' SDPA attention."""

from __future__ import annotations

import pytest

from mega_plugin.benchmarks.common import benchmark_config
from mega_plugin.benchmarks.llama import build_equal_llama, matching_mlp_width, non_embedding_parameters
from mega_plugin.benchmarks.models import build_model, build_ours

pytestmark = pytest.mark.hf


@pytest.mark.parametrize("causal_lm", [False, True])
def test_equal_llama_matches_the_benchmark_model(causal_lm: bool) -> None:
    config = benchmark_config(chunk_size=256, causal=True)
    ours = build_ours(config)
    mega_parameters = non_embedding_parameters(ours)
    llama = build_equal_llama(config, mega_parameters=mega_parameters, max_length=512, causal_lm=causal_lm)
    llama_parameters = non_embedding_parameters(llama)
    one_column = 3 * config.hidden_size * config.num_hidden_layers
    assert abs(llama_parameters - mega_parameters) <= one_column
    assert llama.config.hidden_size == config.hidden_size
    assert llama.config.num_hidden_layers == config.num_hidden_layers
    assert llama.config.vocab_size == config.vocab_size
    assert llama.config._attn_implementation == "sdpa"


def test_build_model_runs_the_llama_on_the_benchmark_tokens() -> None:
    import torch

    model, forward = build_model("llama", chunk_size=None, max_length=64)
    with torch.inference_mode():
        assert forward(torch.randint(3, 1000, (2, 64))).shape == (2, 64, 256)


def test_a_mega_layer_too_small_for_llama_attention_is_refused() -> None:
    config = benchmark_config(chunk_size=None, causal=True)
    with pytest.raises(ValueError, match="smaller than Llama's attention"):
        matching_mlp_width(config, mega_layer_parameters=1000)
