"""The presets reach the registry with the sizes of the paper (Appendix D) and the checkpoints."""

from __future__ import annotations

import dataclasses
from types import ModuleType

import pytest

from mega_plugin.core.config import MegaCoreConfig
from mega_plugin.core.presets import PRESETS

# name: (layers, hidden, shared z, intermediate v, nffn, attention, norm, pre-norm, vocab)
PAPER = {
    "lra_listops": (6, 80, 64, 160, 160, "softmax", "layernorm", False, 20),
    "lra_text": (4, 128, 64, 256, 256, "softmax", "scalenorm", False, 256),
    "lra_retrieval": (6, 128, 64, 256, 256, "softmax", "scalenorm", False, 256),
    "lra_image": (8, 160, 96, 320, 320, "laplace", "batchnorm", True, 256),
    "lra_pathfinder": (6, 128, 64, 256, 256, "laplace", "batchnorm", True, 256),
    "lra_pathx": (4, 64, 32, 128, 128, "laplace", "batchnorm", True, 256),
    "wikitext103": (16, 1024, 256, 1536, 1536, "softmax", "layernorm", True, 267744),
    "enwik8": (12, 512, 128, 1024, 1024, "softmax", "layernorm", True, 256),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets(fresh_registry: ModuleType, name: str) -> None:
    config = fresh_registry.get_preset(name)
    layers, hidden, shared, inner, nffn, attention, norm, prenorm, vocab = PAPER[name]
    assert (config.num_hidden_layers, config.hidden_size, config.shared_representation_size) == (layers, hidden, shared)
    assert (config.intermediate_size, config.nffn_hidden_size, config.ema_projection_size) == (inner, nffn, 16)
    assert (config.attention_activation, config.normalization_type) == (attention, norm)
    assert config.normalize_before_mega is config.normalize_before_ffn is prenorm
    assert config.vocab_size == vocab
    assert "Appendix D" in fresh_registry.preset_record(name).factory.__doc__


@pytest.mark.parametrize("name", [n for n in sorted(PAPER) if n.startswith("lra_")])
def test_lra_presets_are_bidirectional_encoders_with_chunk_variants(fresh_registry: ModuleType, name: str) -> None:
    base = fresh_registry.get_preset(name)
    chunked = fresh_registry.get_preset(f"{name}_chunk")
    assert base.bidirectional and not base.is_decoder and not base.use_chunking
    assert chunked.use_chunking and chunked.chunk_size == (4096 if name == "lra_pathx" else 128)
    assert chunked.hidden_size == base.hidden_size and chunked.max_positions == base.max_positions
    assert "Appendix D" in fresh_registry.preset_record(f"{name}_chunk").description


@pytest.mark.parametrize("name, chunk", [("wikitext103", 1024), ("enwik8", 2048)])
def test_language_model_presets_are_causal_and_chunked(fresh_registry: ModuleType, name: str, chunk: int) -> None:
    config = fresh_registry.get_preset(name)
    assert not config.bidirectional and config.is_decoder
    assert config.use_chunking and config.chunk_size == chunk


def test_mega_base_wikitext(fresh_registry: ModuleType) -> None:
    config = fresh_registry.get_preset("mega_base_wikitext")
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (4, 128, 256)
    assert (config.nffn_hidden_size, config.shared_representation_size, config.ema_projection_size) == (256, 64, 16)
    assert config.bidirectional and config.normalization_type == "scalenorm" and config.normalize_before_mega
    assert config.relative_positional_bias == "rotary" and config.max_positions == 10000
    assert not config.use_chunking and config.vocab_size == 50265
    assert config.pad_token_id == 1 and config.extra == {"bos_token_id": 0, "eos_token_id": 2}


def test_tiny(fresh_registry: ModuleType) -> None:
    config = fresh_registry.get_preset("tiny")
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.nffn_hidden_size) == (2, 32, 64, 64)
    assert (config.shared_representation_size, config.ema_projection_size, config.vocab_size) == (16, 4, 100)
    assert config.is_decoder and not config.bidirectional
    assert config.use_chunking and config.chunk_size == 8 and config.max_positions == 64


def test_every_core_preset_is_registered_by_the_builtin_plugin(fresh_registry: ModuleType) -> None:
    records = {r.name: r for r in fresh_registry.list_presets()}
    assert set(PRESETS) <= set(records)
    assert all(records[name].source == "mega-plugin" for name in PRESETS)
    assert all(records[name].description for name in PRESETS)


def test_get_preset_returns_a_fresh_validated_config(fresh_registry: ModuleType) -> None:
    first = fresh_registry.get_preset("tiny")
    first.extra["mutated"] = True
    assert "mutated" not in fresh_registry.get_preset("tiny").extra
    assert isinstance(first, MegaCoreConfig)
    assert fresh_registry.get_preset("tiny", hidden_size=48).hidden_size == 48
    with pytest.raises(ValueError, match="normalization_type='nope' is not supported"):
        fresh_registry.get_preset("tiny", normalization_type="nope")


def test_unknown_preset_lists_the_allowed_names(fresh_registry: ModuleType) -> None:
    with pytest.raises(fresh_registry.NotRegisteredError, match=r"preset 'lra' is not registered; allowed values: .*lra_image"):
        fresh_registry.get_preset("lra")


@pytest.mark.hf
def test_hf_config_from_a_builtin_preset_carries_every_core_field_overrides_and_extras(fresh_registry: ModuleType) -> None:
    hf = pytest.importorskip("mega_plugin.adapters.hf")
    core = fresh_registry.get_preset("mega_base_wikitext", hidden_size=64)
    config = hf.MegaConfig.from_preset("mega_base_wikitext", hidden_size=64, tie_word_embeddings=False)
    assert config.to_core() == dataclasses.replace(core, extra={})
    assert (config.bos_token_id, config.eos_token_id) == (0, 2)  # the preset's extras
    assert config.tie_word_embeddings is False  # an HF-only override
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        hf.MegaConfig.from_preset("tiny", hidden_size=0)
    with pytest.raises(fresh_registry.NotRegisteredError, match=r"preset 'nope' is not registered; allowed values: .*tiny"):
        hf.MegaConfig.from_preset("nope")
    with pytest.raises(ValueError, match="norm_eps=1e-06 cannot be expressed in MegaConfig"):
        hf.MegaConfig.from_preset("tiny", norm_eps=1e-6)


@pytest.mark.hf
def test_a_plugin_preset_reaches_the_hf_side(example_plugin: ModuleType) -> None:
    hf = pytest.importorskip("mega_plugin.adapters.hf")
    config = hf.MegaConfig.from_preset("example_small")
    assert config.to_core() == example_plugin.example_small()
    assert (config.ema_kernel, config.attention_kernel, config.chunk_size) == ("example_scan", "example_sdpa", 4)
