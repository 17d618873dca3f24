"""Both adapters use the core's heads, token-type handling and initialisation; interop uses fairseq2's key maps.

With the same weights the fairseq2 ``MegaCausalLM`` and the HF ``MegaForCausalLM`` give the same
embeddings, the same LM hidden transform and the same logits, because both run the same core code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from fs2_helpers import build_model, require_fairseq2

require_fairseq2()
pytestmark = pytest.mark.fairseq2

VARIANTS = {
    "dense-tokentypes": dict(add_lm_hidden_dense_layer=True, add_token_type_embeddings=True, type_vocab_size=3),
    "no-dense-untied": dict(add_lm_hidden_dense_layer=False, tie_embeddings=False),
}


def _variant(tiny_config: Any, name: str) -> Any:
    return dataclasses.replace(tiny_config, **VARIANTS[name])


def _hf_twin(fs2_model: Any, config: Any) -> Any:
    """The HF ``MegaForCausalLM`` holding ``fs2_model``'s weights (converted by the interop maps)."""
    from mega_plugin.adapters.fairseq2.interop import to_hf_state_dict
    from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM

    values = {k: v for k, v in config.to_hf_config().items() if k not in ("model_type", "architectures")}
    hf = MegaForCausalLM(MegaConfig(**values)).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(fs2_model.state_dict(), config), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied: the embedding
    return hf


def test_both_adapters_hold_the_core_head() -> None:
    from mega_plugin.adapters.fairseq2 import model as fs2_model
    from mega_plugin.adapters.hf import modeling_lm
    from mega_plugin.core import heads

    assert modeling_lm.tanh_dense is heads.tanh_dense
    assert heads.MegaLMHeadTransform.__module__ == "mega_plugin.core.heads"
    assert not hasattr(fs2_model, "MegaLMHead")  # no adapter-side copy left


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_weights_give_the_same_head_embeddings_and_logits(tiny_config: Any, variant: str) -> None:
    from fairseq2.nn import BatchLayout

    from mega_plugin.core.heads import MegaLMHeadTransform, tanh_dense

    config = _variant(tiny_config, variant)
    fs2 = build_model(config, seed=11)
    assert isinstance(fs2.head, MegaLMHeadTransform)
    assert (fs2.head.dense is not None) == config.add_lm_hidden_dense_layer
    hf = _hf_twin(fs2, config)

    hidden = torch.randn(2, 9, config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fs2.head(hidden), tanh_dense(hidden, hf.dense))
        if config.add_lm_hidden_dense_layer:
            assert not torch.equal(fs2.head(hidden), hidden)

    ids = torch.randint(2, config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(fs2.decoder_frontend(ids), hf.mega.embedding_layer(ids))
        expected = hf(ids, use_cache=False).logits
        actual = fs2(ids, BatchLayout.of(ids))
    assert (actual - expected).abs().max().item() <= 1e-5


def test_fairseq2_frontend_adds_the_type_zero_row(tiny_config: Any) -> None:
    from mega_plugin.core.embeddings import add_token_type_embeddings

    config = _variant(tiny_config, "dense-tokentypes")
    frontend = build_model(config, seed=3).decoder_frontend
    ids = torch.randint(2, config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        words = frontend.embed(ids)
        expected = add_token_type_embeddings(words, frontend.token_type_embed)
        assert torch.equal(frontend(ids), expected)
        assert torch.equal(frontend(ids), words + frontend.token_type_embed.weight[0])


def test_fairseq2_factory_initialises_with_the_core_functions(tiny_config: Any) -> None:
    from mega_plugin.adapters.fairseq2.factory import MegaFactory
    from mega_plugin.core.init import init_embedding_, init_linear_

    config = _variant(tiny_config, "dense-tokentypes")
    factory = MegaFactory(config)
    width, std = config.hidden_size, config.initializer_range

    torch.manual_seed(5)
    head = factory.create_head()
    torch.manual_seed(5)
    weight, bias = torch.empty(width, width), torch.ones(width)
    init_linear_(weight, bias, std=std)
    assert torch.equal(head.dense.weight.detach(), weight) and torch.equal(head.dense.bias.detach(), bias)

    torch.manual_seed(6)
    frontend = factory.create_frontend()
    torch.manual_seed(6)
    words = torch.empty(config.vocab_size, width)
    init_embedding_(words, std=std, padding_idx=config.pad_idx)
    types = torch.empty(config.type_vocab_size, width)
    init_embedding_(types, std=std, padding_idx=None)
    assert torch.equal(frontend.embed.weight.detach(), words)
    assert torch.equal(frontend.token_type_embed.weight.detach(), types)


def test_state_dict_keys_are_the_fairseq2_layout(tiny_config: Any) -> None:
    config = _variant(tiny_config, "dense-tokentypes")
    keys = set(build_model(config).state_dict())
    outside_layers = {key for key in keys if not key.startswith("decoder.layers.")}
    assert outside_layers == {
        "decoder_frontend.embed.weight",
        "decoder_frontend.token_type_embed.weight",
        "head.dense.weight",
        "head.dense.bias",
        "final_proj.weight",
        "final_proj.bias",
    }


def test_interop_uses_fairseq2_key_map_utilities(tiny_config: Any) -> None:
    from fairseq2.models.utils.checkpoint import convert_state_dict, create_reverse_key_map

    from mega_plugin.adapters.fairseq2.interop import FS2_TO_HF, HF_TO_FS2, map_keys, to_hf_state_dict

    assert FS2_TO_HF == create_reverse_key_map(dict(HF_TO_FS2))
    config = _variant(tiny_config, "dense-tokentypes")
    state = build_model(config).state_dict()
    hf_state = to_hf_state_dict(state, config)
    assert map_keys(hf_state, HF_TO_FS2, "HF") == convert_state_dict(dict(hf_state), HF_TO_FS2)
    assert set(map_keys(state, FS2_TO_HF, "fairseq2")) == set(convert_state_dict(dict(state), FS2_TO_HF))
    assert "mega.embedding_layer.token_type_embeddings.weight" in hf_state and "dense.weight" in hf_state
