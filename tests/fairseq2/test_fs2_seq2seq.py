"""The ``mega_seq2seq`` family: converted translation checkpoints in fairseq2, decoded by its own generators.

The fairseq2 model is checked against the HF ``EncoderDecoderModel`` of the same converted
weights (itself checked against the 4.57 reference in ``tests/hf/test_wmt_translation.py`` and
against the original code in ``test_original_wmt_fixture.py``): teacher-forced logits, the
incremental state against the full forward, fairseq2 beam search against HF beam search, a
train step, the arch and the card written by ``convert --to fairseq2``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from converters.fairseq_mega_checkpoints import WMT_ARGS, translation_state

pytestmark = pytest.mark.fairseq2

TOLERANCE = 1e-5
SOURCE = torch.tensor([[5, 6, 7, 8, 9, 10, 2], [4, 5, 6, 7, 2, 1, 1], [7, 3, 9, 2, 1, 1, 1]])
SOURCE_LENS = [7, 5, 4]


def write_checkpoint(path: Path, *, seed: int = 0, **variant: Any) -> Path:
    """An original translation checkpoint (fairseq's {"model", "args"} layout) at ``path``."""
    torch.manual_seed(seed)
    state = translation_state(**variant)
    state = {k: (v * 0.3 if v.is_floating_point() and "norm" not in k else v) for k, v in state.items()}
    args = {**WMT_ARGS, "share_decoder_input_output_embed": variant.get("tied_output", True)}
    torch.save({"model": state, "args": args}, path)
    return path


def convert(tmp_path: Path, name: str = "wmt_test", **variant: Any) -> Path:
    from mega_plugin.cli import main

    checkpoint = write_checkpoint(tmp_path / "checkpoint.pt", **variant)
    out = tmp_path / name
    assert main(["convert", "--from", "fairseq-mega", str(checkpoint), "--to", "fairseq2", str(out), "--name", name]) == 0
    return out


def fs2_model(directory: Path) -> Any:
    """The fairseq2 model of an HF encoder-decoder directory, built as ``load_model`` builds it."""
    from safetensors.torch import load_file

    from mega_plugin.adapters.fairseq2.seq2seq_config import MegaSeq2SeqConfig
    from mega_plugin.adapters.fairseq2.seq2seq_factory import create_mega_seq2seq_model
    from mega_plugin.adapters.fairseq2.seq2seq_interop import convert_mega_seq2seq_state_dict

    config = MegaSeq2SeqConfig.from_hf_config(json.loads((directory / "config.json").read_text()))
    model = create_mega_seq2seq_model(config)
    state = convert_mega_seq2seq_state_dict(load_file(str(directory / "model.safetensors")), config)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model.eval()


def hf_model(directory: Path) -> Any:
    import mega_plugin  # noqa: F401
    from transformers import EncoderDecoderModel

    return EncoderDecoderModel.from_pretrained(directory).eval()


def layouts(target: Tensor) -> tuple[Any, Any]:
    from fairseq2.nn import BatchLayout

    return BatchLayout(SOURCE.shape, seq_lens=SOURCE_LENS), BatchLayout.of(target)


def vocab(size: int) -> Any:
    from fairseq2.data.tokenizers import VocabularyInfo

    return VocabularyInfo(size=size, unk_idx=3, bos_idx=0, eos_idx=2, pad_idx=1)  # fairseq's dictionary


@pytest.mark.parametrize("variant", [{}, {"bias": "rotary", "norm": "scalenorm", "tied_output": False}],
                         ids=["simple-layernorm-tied", "rotary-scalenorm-untied"])
def test_teacher_forcing_matches_hf(variant: dict[str, Any], tmp_path: Path) -> None:
    directory = convert(tmp_path, **variant)
    target = torch.tensor([[2, 4, 5, 6, 7], [2, 9, 8, 7, 6], [2, 5, 5, 5, 5]])
    source_layout, target_layout = layouts(target)
    with torch.no_grad():
        ours = fs2_model(directory)(SOURCE, source_layout, target, target_layout)
        expected = hf_model(directory)(
            input_ids=SOURCE, attention_mask=(SOURCE != 1).long(), decoder_input_ids=target
        ).logits
    assert float((ours - expected).abs().max()) < TOLERANCE
    assert expected.abs().max() > 0.1


def test_incremental_state_equals_the_full_forward(tmp_path: Path) -> None:
    from fairseq2.nn import BatchLayout, IncrementalStateBag

    model = fs2_model(convert(tmp_path))
    target = torch.tensor([[2, 4, 5, 6, 7, 8], [2, 9, 8, 7, 6, 5], [2, 5, 5, 5, 5, 5]])
    source_layout, target_layout = layouts(target)
    with torch.no_grad():
        full = model(SOURCE, source_layout, target, target_layout)
        bag = IncrementalStateBag(16)
        pieces = []
        for begin, end in ((0, 2), (2, 3), (3, 5)):  # a prefill chunk, then steps
            step = target[:, begin:end]
            pieces.append(model(SOURCE, source_layout, step, BatchLayout.of(step), state_bag=bag))
            bag.increment_step_nr(end - begin)
        # beam search reorders rows: the state follows
        order = torch.tensor([2, 0, 1])
        bag.reorder(order)
        step = target[order, 5:6]
        reordered = model(SOURCE[order], source_layout, step, BatchLayout.of(step), state_bag=bag)
    assert float((torch.cat(pieces, dim=1) - full[:, :5]).abs().max()) < TOLERANCE
    assert float((reordered - full[order, 5:6]).abs().max()) < TOLERANCE


def test_beam_search_agrees_with_hf(tmp_path: Path) -> None:
    """fairseq2's BeamSearchSeq2SeqGenerator and HF generate() find the same best hypothesis."""
    from fairseq2.generation.beam_search import BeamSearchSeq2SeqGenerator

    directory = convert(tmp_path)
    model = fs2_model(directory)
    hf = hf_model(directory)
    steps = 6
    prompt = torch.full((SOURCE.shape[0], 1), 2)
    source_layout, prompt_layout = layouts(prompt)
    for beam in (1, 4):
        generator = BeamSearchSeq2SeqGenerator(
            model, vocab(model.final_proj.output_dim), beam_size=beam, max_gen_len=(0, steps), len_penalty=1.0,
            normalize_scores=True,
        )
        ours = generator(SOURCE, source_layout, prompt, prompt_layout).hypotheses
        expected = hf.generate(
            SOURCE, attention_mask=(SOURCE != 1).long(), num_beams=beam, max_new_tokens=steps,
            length_penalty=1.0, do_sample=False, early_stopping=True, num_return_sequences=1,
        )
        for row, hypotheses in enumerate(ours):
            best = hypotheses[0].seq.tolist()
            hf_row = expected[row, 1:].tolist()
            hf_row = hf_row[: hf_row.index(2) + 1] if 2 in hf_row else hf_row
            assert best == hf_row, (beam, row, best, hf_row)


def test_train_step(tmp_path: Path) -> None:
    model = fs2_model(convert(tmp_path))
    target = torch.tensor([[2, 4, 5, 6], [2, 9, 8, 7], [2, 5, 5, 5]])
    labels = torch.tensor([[4, 5, 6, 2], [9, 8, 7, 2], [5, 5, 5, 2]])
    source_layout, target_layout = layouts(target)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(3):
        loss = model(SOURCE, source_layout, target, target_layout, labels, reduction="mean")
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.decoder.layers[0].cross_attn.k_proj.weight.grad is not None
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(reduction="none"), "reduction must be one of sum, mean"),
        (dict(labels=3), "targets must have the shape of target_seqs"),
        (dict(mask=3), "target_mask must have the shape of target_seqs"),
    ],
    ids=["reduction", "targets-shape", "target-mask-shape"],
)
def test_bad_loss_arguments_are_named(bad: dict[str, Any], message: str, tmp_path: Path) -> None:
    model = fs2_model(convert(tmp_path))
    target = torch.tensor([[2, 4, 5, 6], [2, 9, 8, 7], [2, 5, 5, 5]])
    labels = torch.randint(4, 9, (3, bad.get("labels", 4)))
    mask = torch.ones(3, bad.get("mask", 4), dtype=torch.bool)
    source_layout, target_layout = layouts(target)
    with pytest.raises(ValueError, match=message):
        model(SOURCE, source_layout, target, target_layout, labels, target_mask=mask, reduction=bad.get("reduction", "sum"))


def test_shared_and_tied_tables(tmp_path: Path) -> None:
    model = fs2_model(convert(tmp_path))
    assert model.decoder_frontend.embed is model.encoder_frontend.embed
    assert model.final_proj.weight is model.encoder_frontend.embed.weight
    (tmp_path / "untied").mkdir()
    untied = fs2_model(convert(tmp_path / "untied", tied_output=False))
    assert untied.final_proj.weight is not untied.decoder_frontend.embed.weight


def test_arch_has_the_paper_sizes() -> None:
    from mega_plugin.adapters.fairseq2.seq2seq_config import wmt_en_de
    from mega_plugin.adapters.fairseq2.seq2seq_factory import create_mega_seq2seq_model

    config = wmt_en_de()
    assert (config.hidden_size, config.intermediate_size, config.nffn_hidden_size) == (512, 1024, 1024)
    assert (config.shared_representation_size, config.ema_projection_size) == (128, 16)
    assert (config.num_hidden_layers, config.num_decoder_layers) == (6, 6)
    assert config.scale_embeddings and config.share_embeddings and config.tie_embeddings
    with torch.device("meta"):
        model = create_mega_seq2seq_model(config)
    parameters = sum(p.numel() for name, p in model.named_parameters())
    assert 60e6 < parameters < 80e6, parameters  # the paper's Mega-base: 67M


@pytest.mark.slow
def test_load_model_finds_the_converted_card(tmp_path: Path) -> None:
    """A fresh process: FAIRSEQ2_USER_ASSET_DIR at the converter's output, load_model by card name."""
    directory = convert(tmp_path, name="wmt_card_test")
    card = (directory / "wmt_card_test.yaml").read_text()
    assert "model_family: mega_seq2seq" in card
    script = (
        "import torch\n"
        "from fairseq2.models import load_model\n"
        "from mega_plugin.adapters.fairseq2.seq2seq_model import MegaSeq2SeqModel\n"
        "m = load_model('wmt_card_test', device=torch.device('cpu'), dtype=torch.float32)\n"
        "assert isinstance(m, MegaSeq2SeqModel), type(m)\n"
        "print(float(m.encoder_frontend.embed.weight.sum()))\n"
    )
    env = {**os.environ, "FAIRSEQ2_USER_ASSET_DIR": str(directory), "FAIRSEQ2_EXTENSION_TRACE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = float(fs2_model(directory).encoder_frontend.embed.weight.sum())
    assert abs(float(done.stdout.strip().splitlines()[-1]) - expected) < 1e-4


def test_sampling_generator_decodes_too(tmp_path: Path) -> None:
    from fairseq2.generation.sampling import SamplingSeq2SeqGenerator, TopKSampler

    model = fs2_model(convert(tmp_path))
    prompt = torch.full((SOURCE.shape[0], 1), 2)
    source_layout, prompt_layout = layouts(prompt)
    generator = SamplingSeq2SeqGenerator(model, vocab(model.final_proj.output_dim), TopKSampler(k=1),
                                         max_gen_len=(0, 6))
    hypotheses = generator(SOURCE, source_layout, prompt, prompt_layout).hypotheses
    from fairseq2.generation.beam_search import BeamSearchSeq2SeqGenerator

    greedy = BeamSearchSeq2SeqGenerator(model, vocab(model.final_proj.output_dim), beam_size=1, max_gen_len=(0, 6))
    expected = greedy(SOURCE, source_layout, prompt, prompt_layout).hypotheses
    for sampled, best in zip(hypotheses, expected):  # top-1 sampling is greedy decoding
        assert sampled[0].seq.tolist() == best[0].seq.tolist()


def test_family_and_arch_are_registered(fs2_assets: Any) -> None:
    from fairseq2.models.hub import ModelHubAccessor

    from mega_plugin.adapters.fairseq2.seq2seq_config import MegaSeq2SeqConfig
    from mega_plugin.adapters.fairseq2.seq2seq_model import MegaSeq2SeqModel

    hub = ModelHubAccessor("mega_seq2seq", MegaSeq2SeqModel, MegaSeq2SeqConfig)()
    assert hub.get_archs() == {"mega_wmt_en_de"}
    config = hub.get_arch_config("mega_wmt_en_de")
    assert config.hidden_size == 512 and config.num_decoder_layers == 6
    small = MegaSeq2SeqConfig(**{**dataclasses.asdict(config), "hidden_size": 16, "intermediate_size": 24,
                                 "nffn_hidden_size": 20, "shared_representation_size": 8, "vocab_size": 30,
                                 "num_hidden_layers": 1, "num_decoder_layers": 1})
    model = hub.create_new_model(small, device=torch.device("cpu"), meta=True)
    assert isinstance(model, MegaSeq2SeqModel)
