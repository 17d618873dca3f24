"""The ``fairseq-mega`` converter called directly: what it refuses, what it drops when allowed, what it infers.

The command-line runs of the same converter are in ``tests/registry/test_convert_cli.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mega_plugin.registry as registry
from mega_plugin.converters.fairseq_mega import NAME, convert_fairseq_mega
from mega_plugin.converters.fairseq_mega.keys import map_layer_key, model_prefix
from mega_plugin.registry import ConversionError

from .fairseq_mega_checkpoints import LM_ARGS, fairseq_state, hf_keys


def test_unknown_keys_are_listed_not_dropped(tmp_path: Path) -> None:
    state = fairseq_state("decoder.")
    state["decoder.layers.0.mega_layer.mystery"] = torch.ones(1)
    state["decoder.something_else.weight"] = torch.ones(1)
    with pytest.raises(ConversionError, match="unknown keys") as raised:
        convert_fairseq_mega(state, LM_ARGS)
    assert raised.value.unmapped == ("decoder.layers.0.mega_layer.mystery", "decoder.something_else.weight")
    config, converted = convert_fairseq_mega(state, LM_ARGS, allow_drop=["decoder.layers.0.mega_layer.mystery", "*else*"])
    assert set(converted) == hf_keys(config)


def test_parameter_free_final_norm_of_a_pre_norm_language_model_is_kept_as_a_non_affine_final_norm() -> None:
    state = fairseq_state("decoder.")  # --normalize-before --no-affine-final-norm: a final norm with no tensors
    args = {**LM_ARGS, "normalize_before": True, "share_decoder_input_output_embed": False}
    config, converted = convert_fairseq_mega(state, args)
    assert config["add_final_norm"] and not config["final_norm_affine"]
    assert config["normalize_before_mega"] and config["architectures"] == ["MegaModel"]  # no head: not shared, no projection
    assert not any(key.startswith("mega.final_norm.") for key in converted)
    with pytest.raises(ConversionError, match="no_affine_final_norm=False"):  # args and tensors disagree
        convert_fairseq_mega(state, {**args, "no_affine_final_norm": False})


def test_without_args_the_architecture_comes_from_the_tensors(caplog: pytest.LogCaptureFixture) -> None:
    state = fairseq_state("decoder.", norm="scalenorm", bias="rotary")
    config, converted = convert_fairseq_mega(state, None)
    assert config["normalization_type"] == "scalenorm" and config["relative_positional_bias"] == "rotary"
    assert not config["normalize_before_mega"]  # no final norm among the tensors
    assert "attention function not in args: assuming softmax" in caplog.text
    assert set(converted) == hf_keys(config)


def test_the_built_in_plugin_registers_it_as_fairseq_mega() -> None:
    record = registry.get_converter(NAME)
    assert NAME == "fairseq-mega"
    assert record.convert is convert_fairseq_mega and record.source == "mega-plugin" and record.accepts_allow_drop


@pytest.mark.parametrize(
    "source, target",
    [
        ("mega_layer.move.delta", "mega_layer.ema_gate.damping_factor"),
        ("mega_layer.move.omega", "mega_layer.ema_gate.residual_weight"),
        ("mega_layer.gamma", "mega_layer.qk_weight"),
        ("mega_layer.rel_pos_bias.beta", "mega_layer.rel_pos_bias.b_param"),
        ("mega_layer.norm.weight", "mega_layer.norm.norm.weight"),
        ("nffn.norm.norm.scalar", "nffn.norm.norm.scalar"),
        ("nffn.fc2.bias", "nffn.fc2.bias"),
        ("mega_layer.mystery", None),
    ],
)
def test_layer_keys_map_to_their_hf_names(source: str, target: str | None) -> None:
    assert map_layer_key(source) == target


def test_the_layers_must_live_under_one_prefix_numbered_from_zero() -> None:
    assert model_prefix(list(fairseq_state("encoder.encoder.", layers=3))) == ("encoder.encoder.", 3)
    with pytest.raises(ConversionError, match="no MEGA layers found"):
        model_prefix(["decoder.embed_tokens.weight"])
    with pytest.raises(ConversionError, match="several prefixes: decoder., encoder."):
        model_prefix(["decoder.layers.0.nffn.fc1.weight", "encoder.layers.0.nffn.fc1.weight"])
    with pytest.raises(ConversionError, match=r"not 0\.\.1: \[0, 2\]"):
        model_prefix(["decoder.layers.0.nffn.fc1.weight", "decoder.layers.2.nffn.fc1.weight"])
