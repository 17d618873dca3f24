"""Every LRA setup of the ORIGINAL facebookresearch/mega code, converted and run in HF.

The oracle is tests/fixtures/original_mega/lra_* (made by the original LRA model files, see
tests/_support/original_fixtures.py): each fixture holds the original's checkpoints (fp32 in
three layouts, fp16, bf16) and the original's outputs on right-padded inputs whose length is not
a multiple of the chunk size. ``mega-plugin convert --from fairseq-mega ... --to hf`` must need
no ``--allow-drop``, and the converted model (loaded through the Auto classes) must give the
original's logits, pooled vectors and last hidden states within the fixture's tolerance (1e-5).
A perturbed weight, a wrong config field or the wrong pair order must move the logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from _support.original_fixtures import load_fixture
from mega_plugin.cli import main

pytestmark = pytest.mark.hf

LRA_SETUPS = ("lra_listops", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder", "lra_pathx", "sc_raw")
"""The six LRA setups, and the raw speech-commands classifier (the same encoder on audio samples)."""
CHECKPOINTS = (("fp32", "save_state"), ("fp32", "cfg"), ("fp32", "legacy"), ("fp16", "save_state"), ("bf16", "save_state"))


def _convert(name: str, variant: str, layout: str, out: Path) -> dict[str, Any]:
    path = load_fixture(name).checkpoint_path(variant=variant, layout=layout)
    # no --trust-checkpoint: fairseq's extra_state holds numpy scalars, allowed by name
    assert main(["convert", "--from", "fairseq-mega", str(path), "--to", "hf", str(out)]) == 0
    return json.loads((out / "config.json").read_text())


def _load(out: Path) -> torch.nn.Module:
    import mega_plugin  # noqa: F401  (registers MEGA with the Auto classes)
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(out)
    image = config.architectures == ["MegaForImageClassification"]
    auto = AutoModelForImageClassification if image else AutoModelForSequenceClassification
    return auto.from_pretrained(out).eval()


def _real_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """HF 0/1 attention mask of right-padded inputs with ``lengths`` real tokens."""
    return (torch.arange(length)[None, :] < lengths[:, None]).long()


def _run(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> Any:
    tokens, lengths = reference["input.src_tokens"], reference["input.src_lengths"]
    with torch.no_grad():
        if tokens.is_floating_point():  # pixels or audio samples: one real number per position, no padding
            if type(model).__name__ == "MegaForImageClassification":
                return model(pixel_values=tokens, output_hidden_states=True)
            return model(input_values=tokens, output_hidden_states=True)
        extra = {}
        if "input.src_tokens1" in reference:  # retrieval: the second document
            second = reference["input.src_tokens1"]
            extra = dict(pair_input_ids=second, pair_attention_mask=_real_mask(reference["input.src_lengths1"], second.shape[1]))
        mask = _real_mask(lengths, tokens.shape[1])
        return model(tokens, attention_mask=mask, output_hidden_states=True, **extra)


@pytest.mark.parametrize("variant,layout", CHECKPOINTS, ids=[f"{v}-{layout}" for v, layout in CHECKPOINTS])
@pytest.mark.parametrize("name", LRA_SETUPS)
def test_converted_lra_model_gives_the_original_logits(name: str, variant: str, layout: str, tmp_path: Path) -> None:
    fixture = load_fixture(name)
    config = _convert(name, variant, layout, tmp_path / "hf")
    expected_class = "MegaForImageClassification" if fixture.kind == "lra_image" else "MegaForSequenceClassification"
    real_numbers = fixture.kind in ("lra_image", "sc")
    assert config.get("input_type", "tokens") == ("real_numbers" if real_numbers else "tokens")
    assert config["architectures"] == [expected_class] and config["classifier_style"] == "lra"
    assert config.get("classifier_dual_input", False) == (fixture.kind == "lra_retrieval")  # defaults are left out
    assert config.get("add_final_norm", False) == fixture.args["encoder_normalize_before"]
    model = _load(tmp_path / "hf")
    assert type(model).__name__ == expected_class
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16/bf16 widened: fp32 arithmetic
    reference = fixture.reference(variant=variant)
    output = _run(model, reference)
    tolerance = fixture.tolerance(variant)
    torch.testing.assert_close(output.logits, reference["logits"], **tolerance)
    tokens, lengths = reference["input.src_tokens"], reference["input.src_lengths"]
    keep = _real_mask(lengths, tokens.shape[1]).unsqueeze(-1)
    torch.testing.assert_close(output.hidden_states[-1] * keep, reference["hidden"], **tolerance)  # pads zeroed


@pytest.mark.parametrize("name", LRA_SETUPS)
def test_a_perturbed_weight_or_a_wrong_field_moves_the_logits(name: str, tmp_path: Path) -> None:
    fixture = load_fixture(name)
    config = _convert(name, "fp32", "save_state", tmp_path / "hf")
    reference = fixture.reference()
    model = _load(tmp_path / "hf")
    tolerance = fixture.tolerance("fp32")
    torch.testing.assert_close(_run(model, reference).logits, reference["logits"], **tolerance)

    def moved(changed: torch.nn.Module) -> bool:
        return not torch.allclose(_run(changed, reference).logits, reference["logits"], **tolerance)

    state = model.state_dict()
    keys = ["mega.layers.1.mega_layer.ema_gate.damping_factor", "classifier.layers.0.bias", "classifier.out_proj.weight"]
    if config["normalization_type"] in ("batchnorm", "syncbatchnorm"):  # the running statistics are used
        keys += ["mega.layers.0.mega_layer.norm.norm.running_mean", "mega.final_norm.norm.running_var"]
    for key in keys:
        perturbed = _load(tmp_path / "hf")
        with torch.no_grad():
            perturbed.state_dict()[key].add_(0.05 * torch.ones_like(state[key]))
        assert moved(perturbed), key
    wrong_fields: dict[str, Any] = {"classifier_pooling": "first", "classifier_activation": "relu"}
    if config.get("add_final_norm", False):
        wrong_fields["add_final_norm"] = False
    for field, value in wrong_fields.items():
        changed = json.loads((tmp_path / "hf" / "config.json").read_text())
        changed[field] = value
        directory = tmp_path / f"wrong_{field}"
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(changed))
        (directory / "model.safetensors").symlink_to(tmp_path / "hf" / "model.safetensors")
        assert moved(_load(directory)), field
    if fixture.kind == "lra_retrieval":  # the pair is concatenated as [second, first]
        swapped = dict(reference)
        swapped["input.src_tokens"], swapped["input.src_tokens1"] = reference["input.src_tokens1"], reference["input.src_tokens"]
        swapped["input.src_lengths"], swapped["input.src_lengths1"] = reference["input.src_lengths1"], reference["input.src_lengths"]
        assert not torch.allclose(_run(model, swapped).logits, reference["logits"], **tolerance)


@pytest.mark.parametrize("name", LRA_SETUPS)
def test_the_original_pooled_vector_is_the_heads_input(name: str, tmp_path: Path) -> None:
    from mega_plugin.core.lra_head import pool_sequence

    fixture = load_fixture(name)
    _convert(name, "fp32", "save_state", tmp_path / "hf")
    model = _load(tmp_path / "hf")
    reference = fixture.reference()
    output = _run(model, reference)
    tokens, lengths = reference["input.src_tokens"], reference["input.src_lengths"]
    mask = _real_mask(lengths, tokens.shape[1]).bool()
    pooled = pool_sequence(output.hidden_states[-1], mask, pooling=model.config.classifier_pooling)
    torch.testing.assert_close(pooled, reference["pooled"], **fixture.tolerance("fp32"))


def test_what_the_target_cannot_hold_is_refused_with_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from _support.original_fixtures import load_checkpoint

    fixture = load_fixture("lra_text")
    checkpoint = load_checkpoint(fixture.checkpoint_path())
    state = dict(checkpoint["model"])
    state["encoder.encoder.mystery.weight"] = torch.ones(1)  # a key the original LRA model does not have
    torch.save({"model": state, "args": checkpoint["args"]}, tmp_path / "mystery.pt")
    assert main(["convert", "--from", "fairseq-mega", str(tmp_path / "mystery.pt"), "--to", "hf", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "encoder.encoder.mystery.weight: unknown key" in err and "--allow-drop" in err
    args = checkpoint["args"]
    args.use_p = True
    torch.save({"model": checkpoint["model"], "args": args}, tmp_path / "use_p.pt")
    assert main(["convert", "--from", "fairseq-mega", str(tmp_path / "use_p.pt"), "--to", "hf", str(tmp_path / "b")]) == 1
    assert "use_p" in capsys.readouterr().err
    args.use_p, args.sen_rep_type = False, "max"
    torch.save({"model": checkpoint["model"], "args": args}, tmp_path / "rep.pt")
    assert main(["convert", "--from", "fairseq-mega", str(tmp_path / "rep.pt"), "--to", "hf", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "sen_rep_type='max'" in err and "allowed values: mp, cls" in err


def test_to_fairseq2_refuses_a_bare_encoder_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # classifiers go to the mega_classifier family (tests/fairseq2/test_fs2_classifier.py); an encoder
    # whose head was dropped has no fairseq2 family (the mega family is causal)
    out = tmp_path / "fs2"
    path = load_fixture("lra_image").checkpoint_path()
    drop = ["--allow-drop", "classifier.*", "--allow-drop", "sentence_*"]
    assert main(["convert", "--from", "fairseq-mega", str(path), "--to", "fairseq2", str(out), *drop]) == 1
    err = capsys.readouterr().err
    assert "MegaModel" in err and "allowed here: --to hf" in err
    assert not out.exists()


def test_incomplete_or_inconsistent_lra_checkpoints_are_refused_by_name() -> None:
    from _support.original_fixtures import load_checkpoint
    from mega_plugin.converters.fairseq_mega.convert import convert_fairseq_mega
    from mega_plugin.registry import ConversionError

    image = load_checkpoint(load_fixture("lra_image").checkpoint_path())
    state, args = dict(image["model"]), vars(image["args"])
    no_final = {k: v for k, v in state.items() if not k.startswith("encoder.encoder.final_norm.")}
    with pytest.raises(ConversionError, match="has no final norm"):
        convert_fairseq_mega(no_final, args)
    config, converted = convert_fairseq_mega(state, args, allow_drop=["encoder.encoder.final_norm.*"])
    assert not config.get("add_final_norm", False) and not any("final_norm" in k for k in converted)  # asked for
    with pytest.raises(ConversionError, match="real-number embedding needs both"):
        convert_fairseq_mega({k: v for k, v in state.items() if k != "encoder.encoder.embed_tokens.bias"}, args)
    with pytest.raises(ConversionError, match="classifier layers are incomplete"):
        convert_fairseq_mega({k: v for k, v in state.items() if k != "classifier.0.0.bias"}, args)
    with pytest.raises(ConversionError, match="classifier_activation_fn='swish'.*allowed values"):
        convert_fairseq_mega(state, {**args, "classifier_activation_fn": "swish"})
    with pytest.raises(ConversionError, match="unknown key"):
        convert_fairseq_mega({**state, "encoder.encoder.mystery.weight": state["classifier.0.0.bias"]}, args)


def test_the_embedding_norm_of_normalize_embedding_is_kept() -> None:
    # --normalize-embedding (no fixture of the original has it): its norm maps to the core's
    # embedding norm, applied before the first layer; the formula is checked in tests/hf/test_lra_heads.py
    from _support.original_fixtures import load_checkpoint
    from mega_plugin.converters.fairseq_mega.convert import convert_fairseq_mega
    from mega_plugin.registry import ConversionError

    text = load_checkpoint(load_fixture("lra_text").checkpoint_path())
    state, args = dict(text["model"]), {**vars(text["args"]), "normalize_embedding": True}
    state["encoder.encoder.embed_norm.norm.scalar"] = torch.full((1,), 2.0)
    config, converted = convert_fairseq_mega(state, args)
    assert config["normalize_embeddings"] is True
    assert torch.equal(converted["mega.embedding_layer.embedding_norm.norm.scalar"], torch.full((1,), 2.0))
    del state["encoder.encoder.embed_norm.norm.scalar"]
    with pytest.raises(ConversionError, match="embedding norm's affine tensors"):
        convert_fairseq_mega(state, args)
