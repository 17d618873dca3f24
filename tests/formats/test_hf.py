"""The Hugging Face MEGA directory (``mega_plugin.formats.hf``): the config.json dict and the weight files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mega_plugin.core import MegaCoreConfig
from mega_plugin.formats import hf


def test_the_config_dict_holds_the_core_fields_the_hf_only_fields_and_the_model_type() -> None:
    core = MegaCoreConfig(vocab_size=50, hidden_size=16, extra={"bos_token_id": 5, "custom": "kept"})
    config = hf.hf_config_dict(core, architectures=("MegaForCausalLM",), use_cache=False, bos_token_id=7)
    assert config["model_type"] == "mega" and config["architectures"] == ["MegaForCausalLM"]
    assert (config["vocab_size"], config["hidden_size"], config["relative_positional_bias"]) == (50, 16, "rotary")
    assert not set(hf.EXCLUDED_CORE_FIELDS) & set(config)
    assert config["use_cache"] is False and config["eos_token_id"] == hf.HF_ONLY_DEFAULTS["eos_token_id"]
    assert config["bos_token_id"] == 7 and config["custom"] == "kept"  # keyword fields win over core.extra


def test_the_directory_holds_config_json_and_safetensors_even_for_shared_and_view_tensors(tmp_path: Path) -> None:
    table = torch.randn(6, 4)
    state = {hf.HF_WORD_EMBEDDINGS: table, "lm_head.weight": table, "lm_head.bias": torch.zeros(10)[2:8]}
    seen: list[tuple[int, int, str]] = []
    files = hf.save_hf_directory(
        tmp_path / "out", {"model_type": "mega"}, state, progress=lambda done, total, key: seen.append((done, total, key))
    )
    assert files == [tmp_path / "out" / "config.json", tmp_path / "out" / "model.safetensors"]
    assert json.loads(files[0].read_text()) == {"model_type": "mega"}
    loaded = load_file(str(files[1]))
    assert set(loaded) == set(state)
    for key, tensor in state.items():
        torch.testing.assert_close(loaded[key], tensor)
    assert seen == [(1, 3, hf.HF_WORD_EMBEDDINGS), (2, 3, "lm_head.weight"), (3, 3, "lm_head.bias")]


def test_without_safe_serialization_the_weights_go_to_pytorch_model_bin(tmp_path: Path) -> None:
    state = {"mega.layers.0.mega_layer.qk_bias": torch.randn(2, 4)}
    files = hf.save_hf_directory(tmp_path, {}, state, safe_serialization=False)
    assert files[1] == tmp_path / "pytorch_model.bin"
    torch.testing.assert_close(torch.load(files[1], weights_only=True), state)


def test_values_that_are_not_tensors_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not tensors: a, b"):
        hf.save_hf_directory(tmp_path / "out", {}, {"b": 1.0, "a": [1], "c": torch.ones(1)})
    assert not (tmp_path / "out" / "config.json").exists()
