"""``mega-plugin convert``: synthetic original checkpoints into the HF MEGA layout."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from converters.fairseq_mega_checkpoints import LM_ARGS, fairseq_state, hf_keys
from safetensors.torch import load_file

from mega_plugin.cli import main

MEGA_CONFIG_FIELDS = {  # transformers' MegaConfig (4.40-4.57)
    "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "ema_projection_size", "bidirectional",
    "shared_representation_size", "use_chunking", "chunk_size", "truncation", "normalize_before_mega",
    "normalization_type", "norm_affine", "activation", "attention_activation", "dropout_prob", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "use_feature_dropout", "use_normalized_ffn", "nffn_hidden_size",
    "normalize_before_ffn", "nffn_activation_dropout_prob", "max_positions", "add_token_type_embeddings",
    "type_vocab_size", "initializer_range", "ema_delta_alpha_range", "ema_beta_range", "ema_gamma_omega_range",
    "pad_token_id", "bos_token_id", "eos_token_id", "relative_positional_bias", "classifier_dropout", "use_cache",
    "add_lm_hidden_dense_layer", "is_decoder", "add_cross_attention", "tie_word_embeddings",
}


def _lm_checkpoint(path: Path, **extra: Any) -> dict[str, torch.Tensor]:
    state = fairseq_state("decoder.", bias_positions=4)
    state["decoder.output_projection.weight"] = state["decoder.embed_tokens.weight"]  # shared, as fairseq saves it
    state["decoder.version"] = torch.tensor([3.0])
    torch.save({"model": state, "args": argparse.Namespace(**LM_ARGS), "extra_state": {"epoch": 3}, **extra}, path)
    return state


def _lra_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    state = fairseq_state(
        "encoder.encoder.", bidirectional=True, norm="scalenorm", bias="rotary", embedding_key="embed_tokens.embed.weight"
    )
    state["encoder.encoder.final_norm.norm.scalar"] = torch.ones(1)
    state["classifier.0.0.weight"] = torch.randn(16, 8)
    state["classifier.0.0.bias"] = torch.randn(16)
    state["sentence_projection_layer.weight"] = torch.randn(10, 16)
    args = dict(
        encoder_normalize_before=True, norm_type="scalenorm", chunk_size=-1, max_positions=4002, rel_pos_bias="rotary",
        attention_activation_fn="laplace", activation_fn="silu", truncation_length=1024,
    )
    torch.save({"model": state, "args": argparse.Namespace(**args)}, path)
    return state


def _convert(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mega_plugin", "convert", *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env)


def test_language_model_checkpoint_converts_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = _lm_checkpoint(tmp_path / "checkpoint_best.pt")
    out = tmp_path / "hf"
    assert main(["convert", "--from", "fairseq-mega", str(tmp_path / "checkpoint_best.pt"), "--to", "hf", str(out)]) == 0
    err = capsys.readouterr().err
    assert "[##############################] " in err and "writing" in err  # the progress bar, finished
    config = json.loads((out / "config.json").read_text())
    state = load_file(str(out / "model.safetensors"))
    assert MEGA_CONFIG_FIELDS <= set(config) and config["model_type"] == "mega"
    assert config["architectures"] == ["MegaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (8, 2, 11)
    assert (config["intermediate_size"], config["shared_representation_size"], config["nffn_hidden_size"]) == (16, 4, 12)
    assert config["is_decoder"] and not config["bidirectional"] and config["ema_projection_size"] == 2
    assert config["use_chunking"] and config["chunk_size"] == 4 and config["max_positions"] == 16
    assert not config["normalize_before_mega"]  # read from the args, not hard-coded
    assert config["relative_positional_bias"] == "simple" and config["normalization_type"] == "layernorm"
    assert not config["tie_word_embeddings"] and not config["add_lm_hidden_dense_layer"]
    assert set(state) == hf_keys(config)  # zero missing, zero unexpected
    assert state["mega.layers.1.mega_layer.ema_gate.damping_factor"].shape == (8, 2, 1)
    torch.testing.assert_close(state["mega.layers.1.mega_layer.ema_gate.damping_factor"], original["decoder.layers.1.mega_layer.move.delta"])
    torch.testing.assert_close(state["mega.layers.1.mega_layer.ema_gate.decay_factor"], original["decoder.layers.1.mega_layer.move.alpha"])
    torch.testing.assert_close(state["mega.layers.0.mega_layer.qk_weight"], original["decoder.layers.0.mega_layer.gamma"])
    torch.testing.assert_close(state["mega.layers.0.mega_layer.qk_bias"], original["decoder.layers.0.mega_layer.beta"])
    bias = state["mega.layers.0.mega_layer.rel_pos_bias.rel_pos_bias"]
    assert bias.shape == (2 * 16 - 1,)  # HF sizes it by max_positions ...
    torch.testing.assert_close(bias[:7], original["decoder.layers.0.mega_layer.rel_pos_bias.rel_pos_bias"])  # ... head = original
    assert not bias[7:].any()
    embedding = original["decoder.embed_tokens.weight"]
    torch.testing.assert_close(state["mega.embedding_layer.word_embeddings.weight"], embedding * math.sqrt(8))
    torch.testing.assert_close(state["lm_head.weight"], embedding)  # the head keeps the unscaled, shared table
    assert not state["lm_head.bias"].any()


def test_lra_checkpoint_converts_whole_and_drops_its_head_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    original = _lra_checkpoint(tmp_path / "lra.pt")
    whole = tmp_path / "whole"
    assert main(["convert", "--from", "fairseq-mega", str(tmp_path / "lra.pt"), "--to", "hf", str(whole)]) == 0
    config = json.loads((whole / "config.json").read_text())
    state = load_file(str(whole / "model.safetensors"))
    assert config["architectures"] == ["MegaForSequenceClassification"] and config["classifier_style"] == "lra"
    assert config["add_final_norm"] and len(config["id2label"]) == 10
    assert torch.equal(state["classifier.out_proj.weight"], original["sentence_projection_layer.weight"])
    assert torch.equal(state["mega.final_norm.norm.scalar"], original["encoder.encoder.final_norm.norm.scalar"])
    out = tmp_path / "hf"
    allow = ["--allow-drop", "classifier.*", "--allow-drop", "sentence_*"]
    assert main(["convert", "--from", "fairseq-mega", str(tmp_path / "lra.pt"), "--to", "hf", str(out), *allow]) == 0
    assert "dropping 3 key(s) as allowed by --allow-drop" in caplog.text
    config = json.loads((out / "config.json").read_text())
    state = load_file(str(out / "model.safetensors"))
    assert config["architectures"] == ["MegaModel"] and config["bidirectional"] and not config["is_decoder"]
    assert config["normalize_before_mega"] and config["normalization_type"] == "scalenorm"
    assert config["relative_positional_bias"] == "rotary" and config["attention_activation"] == "laplace"
    assert config["truncation"] == 1024 and not config["use_chunking"]
    assert set(state) == hf_keys(config)
    assert state["mega.layers.0.mega_layer.ema_gate.damping_factor"].shape == (16, 2, 1)  # 2D rows: bidirectional
    torch.testing.assert_close(
        state["mega.layers.0.mega_layer.rel_pos_bias.b_param"], original["encoder.encoder.layers.0.mega_layer.rel_pos_bias.beta"]
    )
    table, source = state["mega.embedding_layer.word_embeddings.weight"], original["encoder.encoder.embed_tokens.embed.weight"]
    torch.testing.assert_close(table[2:], source[2:])  # encoders do not scale their embeddings
    torch.testing.assert_close(table[0], source[0])
    assert not table[1].any()  # the padding row: the original zeroes padded embeddings, so it was never read


def test_original_args_file_bin_output_and_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(fairseq_state("decoder.", norm="batchnorm"), tmp_path / "bare.pt")  # a bare state dict, no args
    (tmp_path / "args.json").write_text(json.dumps({"attention_activation_fn": "relu2", "normalize_before": False}))
    out = tmp_path / "hf"
    common = ["convert", "--from", "fairseq-mega", str(tmp_path / "bare.pt"), "--to", "hf", str(out)]
    assert main([*common, "--original-args", str(tmp_path / "args.json"), "--bin"]) == 0
    state = torch.load(out / "pytorch_model.bin", weights_only=True)
    config = json.loads((out / "config.json").read_text())
    assert config["attention_activation"] == "relu2" and config["normalization_type"] == "batchnorm"
    assert set(state) == hf_keys(config) and int(state["mega.layers.0.mega_layer.norm.norm.num_batches_tracked"]) == 3
    assert main(common) == 2
    assert "exists (pass --overwrite" in capsys.readouterr().err
    assert main([*common, "--overwrite"]) == 0 and (out / "model.safetensors").exists()


def test_objects_refused_by_weights_only_loading_need_trust(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _lm_checkpoint(tmp_path / "ckpt.pt", saved_on=datetime.date(2022, 9, 21))
    common = ["convert", "--from", "fairseq-mega", str(tmp_path / "ckpt.pt"), "--to", "hf"]
    assert main([*common, str(tmp_path / "a")]) == 1
    assert "pass --trust-checkpoint" in capsys.readouterr().err
    assert main([*common, str(tmp_path / "b"), "--trust-checkpoint"]) == 0


def test_unknown_converter_lists_the_registered_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--from", "nope", str(tmp_path / "x.pt"), "--to", "hf", str(tmp_path / "out")]) == 2
    assert "converter 'nope' is not registered; allowed values: fairseq-mega" in capsys.readouterr().err


def test_a_plugin_converter_runs_from_the_command_line(tmp_path: Path, installed_test_plugins: Any) -> None:
    torch.save({"embedding_layer.word_embeddings.weight": torch.randn(10, 8)}, tmp_path / "bare.pt")
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1}))
    arguments = ["--from", "example-bare-hf", str(tmp_path / "bare.pt"), "--to", "hf", str(tmp_path / "out")]
    done = _convert(*arguments, "--original-args", str(tmp_path / "config.json"), env=installed_test_plugins.subprocess_env(
        MEGA_PLUGIN_BLOCK="mega-plugin-broken"
    ))
    assert done.returncode == 0, done.stderr
    assert "example-bare-hf (mega-plugin-example)" in done.stderr
    assert list(load_file(str(tmp_path / "out" / "model.safetensors"))) == ["mega.embedding_layer.word_embeddings.weight"]


def _missing(info: dict[str, Any]) -> set[str]:
    assert not info["unexpected_keys"], info  # lists on transformers 4.57, sets on 5.x
    return set(info["missing_keys"])


@pytest.mark.hf
def test_a_converted_language_model_loads_with_auto_model_for_causal_lm(tmp_path: Path, fresh_registry: ModuleType) -> None:
    import mega_plugin  # noqa: F401  (registers MEGA with the Auto classes)
    from transformers import AutoModelForCausalLM

    original = _lm_checkpoint(tmp_path / "lm.pt")
    assert main(["convert", "--from", "fairseq-mega", str(tmp_path / "lm.pt"), "--to", "hf", str(tmp_path / "hf")]) == 0
    model, info = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert type(model).__name__ == "MegaForCausalLM" and _missing(info) == set()
    embedding = original["decoder.embed_tokens.weight"]
    torch.testing.assert_close(model.get_input_embeddings().weight, embedding * math.sqrt(8))  # sqrt(d) folded in
    torch.testing.assert_close(model.get_output_embeddings().weight, embedding)
    torch.testing.assert_close(
        model.mega.layers[1].mega_layer.ema_gate.residual_weight, original["decoder.layers.1.mega_layer.move.omega"]
    )
    logits = model.eval()(torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10]])).logits
    assert logits.shape == (1, 8, 11) and torch.isfinite(logits).all()


@pytest.mark.hf
def test_a_converted_encoder_loads_with_auto_model_and_auto_model_for_masked_lm(
    tmp_path: Path, fresh_registry: ModuleType
) -> None:
    import mega_plugin  # noqa: F401  (registers MEGA with the Auto classes)
    from transformers import AutoModel, AutoModelForMaskedLM

    original = _lra_checkpoint(tmp_path / "lra.pt")
    allow = ["--allow-drop", "classifier.*", "--allow-drop", "sentence_*"]  # a bare encoder
    out = str(tmp_path / "hf")
    assert main(["convert", "--from", "fairseq-mega", str(tmp_path / "lra.pt"), "--to", "hf", out, *allow]) == 0
    base, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert type(base).__name__ == "MegaModel"
    assert _missing(info) <= {"pooler.dense.weight", "pooler.dense.bias"}  # the original has no pooler
    masked, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert type(masked).__name__ == "MegaForMaskedLM"
    # The original encoder has no LM head: the head is new, its matrix tied to the converted embeddings.
    assert _missing(info) <= {"mlm_head.weight", "mlm_head.bias"}
    embedding = original["encoder.encoder.embed_tokens.embed.weight"].clone()
    embedding[1] = 0  # the padding row, never read by the original
    assert masked.get_output_embeddings().weight.data_ptr() == masked.get_input_embeddings().weight.data_ptr()
    torch.testing.assert_close(masked.get_input_embeddings().weight, embedding)
    torch.testing.assert_close(
        masked.mega.layers[0].mega_layer.qk_weight, original["encoder.encoder.layers.0.mega_layer.gamma"]
    )
    logits = masked.eval()(torch.tensor([[3, 4, 5, 6, 7]])).logits
    assert logits.shape == (1, 5, 11) and torch.isfinite(logits).all()


def test_to_fairseq2_writes_the_directory_and_a_card(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    checkpoint = tmp_path / "lm.pt"
    _lm_checkpoint(checkpoint)
    out = tmp_path / "lm_out"
    assert main(["convert", "--from", "fairseq-mega", str(checkpoint), "--to", "fairseq2", str(out),
                 "--name", "my_lm"]) == 0
    card = yaml.safe_load((out / "my_lm.yaml").read_text())
    assert card["name"] == "my_lm" and card["model_family"] == "mega"
    assert Path(card["checkpoint"]) == out.resolve() and (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert card["model_config"]["hidden_size"] == config["hidden_size"]
    assert card["model_config"]["chunk_size"] == LM_ARGS["decoder_chunk_size"]
    default = tmp_path / "named_after_dir"
    assert main(["convert", "--from", "fairseq-mega", str(checkpoint), "--to", "fairseq2", str(default)]) == 0
    assert yaml.safe_load((default / "named_after_dir.yaml").read_text())["name"] == "named_after_dir"
