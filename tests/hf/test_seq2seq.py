"""Encoder-decoder MEGA through transformers' ``EncoderDecoderModel`` (issue 8 item 4).

A MEGA encoder (``MegaModel``, bidirectional) and a MEGA decoder (``MegaForCausalLM`` with
``is_decoder=True``, ``bidirectional=False``, ``add_cross_attention=True``) learn a toy copy
task (8 symbols, source lengths 3-6, right-padded sources) in 400 seeded CPU steps
(~5 s); greedy ``generate()`` must then reproduce held-out sources exactly (>= 90%; chance is
below 0.1%). Then the model is saved and reloaded (outputs unchanged), and
``from_encoder_decoder_pretrained`` assembles one from two saved MEGA directories.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM, MegaModel  # noqa: E402
from transformers import EncoderDecoderModel  # noqa: E402

BOS, PAD, EOS = 0, 1, 2
FIRST_SYMBOL, SYMBOLS = 3, 8
MIN_LENGTH, MAX_LENGTH = 3, 6
TRAIN_STEPS, BATCH = 400, 32
TEST_EXAMPLES = 64

SMALL: dict[str, Any] = dict(
    vocab_size=FIRST_SYMBOL + SYMBOLS,
    hidden_size=32,
    num_hidden_layers=1,
    intermediate_size=64,
    shared_representation_size=16,
    ema_projection_size=4,
    nffn_hidden_size=64,
    max_positions=32,
    relative_positional_bias="rotary",
    normalization_type="layernorm",
    # The default 0.02 leaves gates and attention near uniform and gradients ~1e-9 in the encoder.
    initializer_range=0.1,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
)


def encoder_config() -> MegaConfig:
    return MegaConfig(**SMALL)


def decoder_config() -> MegaConfig:
    return MegaConfig(**SMALL, is_decoder=True, bidirectional=False, add_cross_attention=True)


def build_model(seed: int = 0) -> EncoderDecoderModel:
    torch.manual_seed(seed)
    model = EncoderDecoderModel(
        encoder=MegaModel(encoder_config(), add_pooling_layer=False), decoder=MegaForCausalLM(decoder_config())
    )
    model.config.decoder_start_token_id = BOS
    model.config.pad_token_id = PAD
    model.config.eos_token_id = EOS
    return model


def copy_batch(size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(source ids, source mask, labels): labels are the source followed by EOS, -100 after it."""
    lengths = torch.randint(MIN_LENGTH, MAX_LENGTH + 1, (size,), generator=generator)
    symbols = torch.randint(FIRST_SYMBOL, FIRST_SYMBOL + SYMBOLS, (size, MAX_LENGTH), generator=generator)
    positions = torch.arange(MAX_LENGTH + 1)
    real = positions[:MAX_LENGTH].unsqueeze(0) < lengths.unsqueeze(1)
    source = symbols.masked_fill(~real, PAD)
    labels = torch.cat([source, torch.full((size, 1), PAD)], dim=1)
    labels[torch.arange(size), lengths] = EOS
    labels = labels.masked_fill(positions.unsqueeze(0) > lengths.unsqueeze(1), -100)
    return source, real.long(), labels


@functools.lru_cache(maxsize=1)
def trained() -> tuple[EncoderDecoderModel, float]:
    """The model after training (shared by the tests: they must not modify it) and its last loss."""
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(TRAIN_STEPS):
        source, mask, labels = copy_batch(BATCH, generator)
        loss = model(input_ids=source, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), loss.item()


def strip(tokens: Tensor) -> list[int]:
    """Generated ids after the start token, up to (not including) EOS."""
    out = []
    for token in tokens.tolist()[1:]:
        if token == EOS:
            break
        out.append(token)
    return out


def test_learns_to_copy_and_generate_solves_held_out_examples() -> None:
    model, last_loss = trained()
    source, mask, _ = copy_batch(TEST_EXAMPLES, torch.Generator().manual_seed(99))
    with torch.no_grad():
        generated = model.generate(source, attention_mask=mask, max_new_tokens=MAX_LENGTH + 1, do_sample=False)
    expected = [row[row != PAD].tolist() for row in source]
    solved = sum(strip(row) == target for row, target in zip(generated, expected))
    assert solved / TEST_EXAMPLES >= 0.9, (solved, last_loss, generated[:4].tolist(), expected[:4])


def test_untrained_model_does_not_copy() -> None:
    """The task is not solved by chance: the same check fails before training."""
    model = build_model().eval()
    source, mask, _ = copy_batch(TEST_EXAMPLES, torch.Generator().manual_seed(99))
    with torch.no_grad():
        generated = model.generate(source, attention_mask=mask, max_new_tokens=MAX_LENGTH + 1, do_sample=False)
    solved = sum(strip(row) == row_source[row_source != PAD].tolist() for row, row_source in zip(generated, source))
    assert solved / TEST_EXAMPLES < 0.2


def test_save_and_reload_keeps_outputs(tmp_path: Path) -> None:
    model, _ = trained()
    source, mask, labels = copy_batch(4, torch.Generator().manual_seed(7))
    model.save_pretrained(tmp_path)
    reloaded = EncoderDecoderModel.from_pretrained(tmp_path).eval()
    assert type(reloaded.encoder) is MegaModel and type(reloaded.decoder) is MegaForCausalLM
    assert reloaded.decoder.config.add_cross_attention
    with torch.no_grad():
        before = model(input_ids=source, attention_mask=mask, labels=labels)
        after = reloaded(input_ids=source, attention_mask=mask, labels=labels)
        assert torch.equal(before.logits, after.logits)
        assert torch.equal(
            model.generate(source, attention_mask=mask, max_new_tokens=4),
            reloaded.generate(source, attention_mask=mask, max_new_tokens=4),
        )


def test_from_encoder_decoder_pretrained(tmp_path: Path) -> None:
    torch.manual_seed(3)
    encoder = MegaModel(encoder_config(), add_pooling_layer=False)
    decoder = MegaForCausalLM(decoder_config())
    encoder.save_pretrained(tmp_path / "encoder")
    decoder.save_pretrained(tmp_path / "decoder")
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(tmp_path / "encoder"), str(tmp_path / "decoder"))
    assert type(model.encoder) is MegaModel and type(model.decoder) is MegaForCausalLM
    for name, tensor in decoder.state_dict().items():
        assert torch.equal(model.decoder.state_dict()[name], tensor), name
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], tensor), name


def test_from_encoder_decoder_pretrained_with_a_bidirectional_decoder_is_refused(tmp_path: Path) -> None:
    """transformers forces is_decoder=True on the decoder config; a bidirectional EMA cannot be causal."""
    MegaModel(encoder_config(), add_pooling_layer=False).save_pretrained(tmp_path / "encoder")
    with pytest.raises(ValueError, match="is_decoder=True.*bidirectional=False"):
        EncoderDecoderModel.from_encoder_decoder_pretrained(str(tmp_path / "encoder"), str(tmp_path / "encoder"))
