"""Original language models (WikiText-103, enwik8) converted and run against the ORIGINAL code's outputs.

The oracle is tests/fixtures/original_mega/lm_wt103 and lm_enwik8: tiny randomised models built
and run by the original facebookresearch/mega code (adaptive input + adaptive softmax with tied
weights and projections, pre-norm + parameter-free final norm; enwik8 with a shared input/output
table). Every checkpoint layout and dtype is converted to HF and to fairseq2; features (after
the final norm), full-vocabulary log-probs and one-token-at-a-time decoding must equal the
original's within the manifest tolerance (atol 1e-5 + rtol 1e-5; fp16/bf16 weights widened to fp32). A perturbed
weight, a wrong config field or a broken tie must fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from _support.original_fixtures import load_checkpoint, load_fixture

SETUPS = ("lm_wt103", "lm_enwik8")
CHECKPOINTS = [
    (setup, variant, layout)
    for setup in SETUPS
    for variant, layout in (("fp32", "save_state"), ("fp32", "cfg"), ("fp32", "legacy"), ("fp16", "save_state"), ("bf16", "save_state"))
]


def original_checkpoint(setup: str, variant: str = "fp32", layout: str = "save_state") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, args) of a fixture checkpoint, read as ``mega-plugin convert`` reads it."""
    from mega_plugin.commands.convert import checkpoint_parts

    state, args = checkpoint_parts(load_checkpoint(load_fixture(setup).checkpoint_path(variant=variant, layout=layout)))
    assert args is not None
    return dict(state), args


def converted(setup: str, variant: str, layout: str, out: Path, **config_changes: Any) -> Path:
    from mega_plugin.converters.fairseq_mega import convert_fairseq_mega
    from mega_plugin.formats.hf import save_hf_directory

    state, args = original_checkpoint(setup, variant, layout)
    config, tensors = convert_fairseq_mega(state, args)
    config.update(config_changes)
    save_hf_directory(out, config, tensors)
    return out


def hf_outputs(directory: Path, tokens: Tensor) -> dict[str, Tensor]:
    """Our HF model's features, log-probs and incremental log-probs for ``tokens``."""
    from mega_plugin.adapters.hf.modeling_lm import MegaForCausalLM

    model = MegaForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        full = model(tokens, output_hidden_states=True)
        cache, steps = None, []
        for position in range(tokens.shape[1]):
            step = model(tokens[:, position : position + 1], past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            steps.append(step.logits)
    return {
        "features": full.hidden_states[-1],
        "log_probs": full.logits.log_softmax(-1),
        "incremental_log_probs": torch.cat(steps, dim=1).log_softmax(-1),
    }


def max_diffs(ours: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, float]:
    return {name: float((ours[name].float() - reference[name]).abs().max()) for name in ours}


def assert_matches(ours: dict[str, Tensor], reference: dict[str, Tensor], tolerance: dict[str, float]) -> None:
    """Every output within the manifest's atol + rtol * |reference| (log-probs near -20 carry float32
    rounding of a few 1e-6 per operation)."""
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor.float(), reference[name], atol=tolerance["atol"], rtol=tolerance["rtol"],
                                   msg=lambda text, name=name: f"{name}: {text}; max diffs {max_diffs(ours, reference)}")


@pytest.mark.hf
@pytest.mark.parametrize("setup, variant, layout", CHECKPOINTS)
def test_hf_model_equals_the_original(setup: str, variant: str, layout: str, tmp_path: Path) -> None:
    fixture = load_fixture(setup)
    reference = fixture.reference(variant=variant)
    tokens = reference["input.tokens"]
    assert tokens.shape[1] % fixture.args["decoder_chunk_size"] != 0  # not a chunk multiple
    ours = hf_outputs(converted(setup, variant, layout, tmp_path / "hf"), tokens)
    assert_matches(ours, reference, fixture.tolerance(variant))


@pytest.mark.hf
def test_the_wt103_setup_converts_to_its_adaptive_options(tmp_path: Path) -> None:
    config = json.loads((converted("lm_wt103", "fp32", "save_state", tmp_path) / "config.json").read_text())
    assert config["adaptive_input_cutoffs"] == [12, 24] and config["adaptive_softmax_cutoffs"] == [12, 24]
    assert config["tie_adaptive_weights"] and config["tie_adaptive_proj"] and config["scale_embeddings"]
    assert config["add_final_norm"] and not config["final_norm_affine"]
    assert config["adaptive_softmax_dropout_prob"] == 0.2 and config["architectures"] == ["MegaForCausalLM"]


@pytest.mark.hf
@pytest.mark.parametrize(
    "setup, change",
    [
        ("lm_wt103", {"add_final_norm": False}),
        ("lm_wt103", {"scale_embeddings": False}),
        ("lm_wt103", {"tie_adaptive_proj": False}),  # then the untrained own projections are missing: refused or wrong
        ("lm_enwik8", {"add_final_norm": False}),
        ("lm_enwik8", {"chunk_size": 8, "max_positions": 64}),
    ],
)
def test_a_wrong_config_field_fails(setup: str, change: dict[str, Any], tmp_path: Path) -> None:
    reference = load_fixture(setup).reference()
    try:
        ours = hf_outputs(converted(setup, "fp32", "save_state", tmp_path, **change), reference["input.tokens"])
    except (ValueError, RuntimeError, OSError):
        return  # refused to load: also a failure that cannot go unnoticed
    diffs = max_diffs(ours, reference)
    assert max(diffs.values()) > 10 * load_fixture(setup).tolerance()["atol"], diffs  # the parity test would catch it


@pytest.mark.hf
@pytest.mark.parametrize(
    "setup, key",
    [
        ("lm_wt103", "decoder.adaptive_softmax.head.class_proj.weight"),
        ("lm_wt103", "decoder.embed_tokens.embeddings.2.1.weight"),
        ("lm_wt103", "decoder.layers.1.mega_layer.move.alpha"),
        ("lm_enwik8", "decoder.embed_tokens.weight"),
    ],
)
def test_a_perturbed_weight_fails(setup: str, key: str, tmp_path: Path) -> None:
    from mega_plugin.converters.fairseq_mega import convert_fairseq_mega
    from mega_plugin.formats.hf import save_hf_directory

    state, args = original_checkpoint(setup)
    state[key] = state[key] + 0.05 * torch.randn_like(state[key])
    state = _retie(state, key)
    config, tensors = convert_fairseq_mega(state, args)
    save_hf_directory(tmp_path, config, tensors)
    reference = load_fixture(setup).reference()
    diffs = max_diffs(hf_outputs(tmp_path, reference["input.tokens"]), reference)
    assert max(diffs.values()) > 10 * load_fixture(setup).tolerance()["atol"], diffs


def _retie(state: dict[str, Tensor], key: str) -> dict[str, Tensor]:
    # keep the original's shared tensors shared (as one Parameter would be), so only the value changes
    twins = {
        "decoder.embed_tokens.embeddings.2.1.weight": "decoder.adaptive_softmax.tail.1.0.weight",
        "decoder.embed_tokens.weight": "decoder.output_projection.weight",
    }
    if key in twins and twins[key] in state:
        state[twins[key]] = state[key]
    return state


@pytest.mark.parametrize(
    "key, message",
    [
        ("decoder.adaptive_softmax.tail.0.2.weight", "tail.0.2.weight should be tied"),
        ("decoder.adaptive_softmax.tail.1.0.weight", "tail.1.0.weight should be tied"),
        ("decoder.adaptive_softmax.head.word_proj.weight", "word_proj.weight should be tied"),
    ],
)
def test_a_broken_tie_is_refused_naming_the_key(key: str, message: str) -> None:
    from mega_plugin.converters.fairseq_mega import convert_fairseq_mega
    from mega_plugin.registry import ConversionError

    state, args = original_checkpoint("lm_wt103")
    state[key] = state[key] + 1.0
    with pytest.raises(ConversionError, match=message):
        convert_fairseq_mega(state, args)


@pytest.mark.parametrize(
    "change, field",
    [({"adaptive_input_factor": 2}, "adaptive_input_factor=2.0"), ({"adaptive_input_cutoff": "10,24"}, "adaptive_input_cutoff")],
)
def test_args_that_disagree_with_the_tensors_are_refused(change: dict[str, Any], field: str) -> None:
    from mega_plugin.converters.fairseq_mega import convert_fairseq_mega
    from mega_plugin.registry import ConversionError

    state, args = original_checkpoint("lm_wt103")
    with pytest.raises(ConversionError, match=field):
        convert_fairseq_mega(state, {**args, **change})


def fairseq2_outputs(directory: Path, tokens: Tensor) -> dict[str, Tensor]:
    """The fairseq2 model of a converted directory, built and loaded as ``load_model`` does."""
    from fairseq2.nn import BatchLayout, IncrementalStateBag
    from safetensors.torch import load_file

    from mega_plugin.adapters.fairseq2.config import MegaLMConfig
    from mega_plugin.adapters.fairseq2.factory import create_mega_model
    from mega_plugin.adapters.fairseq2.interop import convert_mega_state_dict

    config = MegaLMConfig.from_hf_config(json.loads((directory / "config.json").read_text()))
    model = create_mega_model(config).eval()
    model.load_state_dict(convert_mega_state_dict(load_file(str(directory / "model.safetensors")), config), strict=True)
    with torch.no_grad():
        full = model(tokens, BatchLayout.of(tokens))
        bag, steps = IncrementalStateBag(tokens.shape[1] + 1), []
        for position in range(tokens.shape[1]):
            step = tokens[:, position : position + 1]
            steps.append(model(step, BatchLayout.of(step), state_bag=bag))
            bag.increment_step_nr(1)
    return {"log_probs": full.log_softmax(-1), "incremental_log_probs": torch.cat(steps, dim=1).log_softmax(-1)}


def convert_cli(setup: str, variant: str, layout: str, out: Path, name: str) -> Path:
    from mega_plugin.cli import main

    checkpoint = load_fixture(setup).checkpoint_path(variant=variant, layout=layout)
    argv = ["convert", "--from", "fairseq-mega", str(checkpoint), "--to", "fairseq2", str(out), "--name", name]
    assert main([*argv]) == 0
    return out


@pytest.mark.fairseq2
@pytest.mark.parametrize("setup, variant, layout", CHECKPOINTS)
def test_fairseq2_model_equals_the_original(setup: str, variant: str, layout: str, tmp_path: Path) -> None:
    fixture = load_fixture(setup)
    reference = fixture.reference(variant=variant)
    directory = convert_cli(setup, variant, layout, tmp_path / "fs2", f"{setup}_test")
    card = (directory / f"{setup}_test.yaml").read_text()
    assert "model_family: mega" in card and "tie_embeddings: false" in card
    assert_matches(fairseq2_outputs(directory, reference["input.tokens"]), reference, fixture.tolerance(variant))
