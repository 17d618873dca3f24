"""``mega-plugin convert --from fairseq-mega`` on checkpoints made by the ORIGINAL code, against its outputs.

The fixtures (tests/fixtures/original_mega, :mod:`_support.original_fixtures`) hold the
original model's outputs for every README setup. A setup the converter supports is converted
with the real CLI in every layout and dtype and must reproduce them within the manifest's
tolerance (1e-5); mutation tests show the comparison fails for one perturbed weight and one
wrong config field. Every README setup converts now: the translation model here, the language
models in ``test_original_lm.py``, the LRA and speech-commands classifiers in ``test_original_lra.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from _support.original_fixtures import load_fixture

PAD, EOS, FIRST_WORD = 1, 2, 4
MT_CHECKPOINTS = [("fp32", "save_state"), ("fp32", "cfg"), ("fp32", "legacy"), ("fp16", "save_state"),
                  ("bf16", "save_state")]


def convert(setup: str, tmp_path: Path, *, variant: str = "fp32", layout: str = "save_state",
            target: str = "hf") -> Path:
    """The real CLI on a fixture checkpoint; returns OUT_DIR."""
    from mega_plugin.cli import main

    out = tmp_path / f"{setup}_{variant}_{layout}_{target}"
    checkpoint = load_fixture(setup).checkpoint_path(variant=variant, layout=layout)
    argv = ["convert", "--from", "fairseq-mega", str(checkpoint), "--to", target, str(out)]
    if target == "fairseq2":
        argv += ["--name", out.name]
    assert main(argv) == 0
    return out


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


# ---- translation (mt_wmt16): EncoderDecoderModel ------------------------------------------

def load_encoder_decoder(directory: Path) -> Any:
    import mega_plugin  # noqa: F401  (registers the Auto classes)
    from transformers import EncoderDecoderModel

    return EncoderDecoderModel.from_pretrained(directory).eval()


def mt_outputs(model: Any, ref: dict[str, Tensor], *, steps: int) -> dict[str, Tensor]:
    """Our encoder output, teacher-forced log-probs, cached step-by-step log-probs and greedy decoding."""
    src, prev = ref["input.src_tokens"], ref["input.prev_output_tokens"]
    mask = src.ne(PAD).long()
    with torch.no_grad():
        encoded = model.encoder(input_ids=src, attention_mask=mask)
        forced = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=prev,
                       decoder_attention_mask=prev.ne(PAD).long()).logits
        past, pieces = None, []
        for t in range(prev.shape[1]):  # teacher forcing through the cache
            out = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=prev[:, t:t + 1],
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
            pieces.append(out.logits)
        tokens, past, scores = torch.full((src.shape[0], 1), EOS), None, []
        for _ in range(steps):  # greedy: specials never chosen, no early stop (as the fixture's original loop)
            out = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=tokens[:, -1:],
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
            step = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            step[:, :FIRST_WORD] = float("-inf")
            best = step.argmax(dim=-1, keepdim=True)
            scores.append(step.gather(1, best))
            tokens = torch.cat([tokens, best], dim=1)
    beam_tokens, beam_scores = beam_search(model, src, mask, beam=3, steps=steps - 2)
    return {
        "beam_tokens": beam_tokens,
        "beam_scores": beam_scores,
        "encoder_out": encoded.last_hidden_state,
        "log_probs": torch.log_softmax(forced.float(), dim=-1),
        "incremental_log_probs": torch.log_softmax(torch.cat(pieces, dim=1).float(), dim=-1),
        "greedy_tokens": tokens,
        "greedy_scores": torch.cat(scores, dim=1),
    }


@torch.no_grad()
def beam_search(model: Any, src: Tensor, mask: Tensor, *, beam: int, steps: int) -> tuple[Tensor, Tensor]:
    """The fixture's plain beam search (see its manifest) on our model, reordering our cache between steps."""
    batch = src.shape[0]
    expand = torch.arange(batch).repeat_interleave(beam)
    encoded = model.encoder(input_ids=src[expand], attention_mask=mask[expand])
    tokens, past = torch.full((batch * beam, 1), EOS), None
    scores = torch.zeros(batch, beam)
    scores[:, 1:] = float("-inf")
    for _ in range(steps):
        out = model(encoder_outputs=encoded, attention_mask=mask[expand], decoder_input_ids=tokens[:, -1:],
                    past_key_values=past, use_cache=True)
        step = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        step[:, :FIRST_WORD] = float("-inf")
        vocab = step.shape[-1]
        scores, flat = (scores.reshape(-1, 1) + step).reshape(batch, beam * vocab).topk(beam, dim=1)
        order = (torch.arange(batch).unsqueeze(1) * beam + flat // vocab).reshape(-1)
        past = out.past_key_values
        past.reorder_cache(order)
        tokens = torch.cat([tokens[order], (flat % vocab).reshape(-1, 1)], dim=1)
    return tokens.reshape(batch, beam, -1), scores


def mt_diffs(ours: dict[str, Tensor], ref: dict[str, Tensor]) -> dict[str, float]:
    real_source = ref["input.src_tokens"].ne(PAD)
    real_target = ref["input.prev_output_tokens"].ne(PAD)
    return {
        "encoder_out": max_diff(ours["encoder_out"][real_source], ref["encoder_out"][real_source]),
        "log_probs": max_diff(ours["log_probs"][real_target], ref["log_probs"][real_target]),
        "incremental_log_probs": max_diff(ours["incremental_log_probs"][real_target],
                                          ref["incremental_log_probs"][real_target]),
        "greedy_scores": max_diff(ours["greedy_scores"], ref["greedy_scores"]),
        "beam_scores": max_diff(ours["beam_scores"], ref["beam_scores"]),
    }


@pytest.mark.hf
@pytest.mark.parametrize(("variant", "layout"), MT_CHECKPOINTS, ids=[f"{v}-{l}" for v, l in MT_CHECKPOINTS])
def test_translation_matches_the_original(variant: str, layout: str, tmp_path: Path) -> None:
    fixture = load_fixture("mt_wmt16")
    ref = fixture.reference(variant=variant)
    model = load_encoder_decoder(convert("mt_wmt16", tmp_path, variant=variant, layout=layout))
    ours = mt_outputs(model, ref, steps=ref["greedy_scores"].shape[1])
    diffs = mt_diffs(ours, ref)
    atol = fixture.tolerance(variant)["atol"]
    assert all(d < atol for d in diffs.values()), diffs
    assert torch.equal(ours["greedy_tokens"], ref["greedy_tokens"])
    assert torch.equal(ours["beam_tokens"], ref["beam_tokens"])
    assert ref["log_probs"].std() > 0.1  # not a degenerate comparison


@pytest.mark.hf
def test_translation_comparison_catches_a_perturbed_weight_and_a_wrong_config(tmp_path: Path) -> None:
    ref = load_fixture("mt_wmt16").reference()
    directory = convert("mt_wmt16", tmp_path)
    steps = ref["greedy_scores"].shape[1]

    perturbed = load_encoder_decoder(directory)
    with torch.no_grad():
        perturbed.encoder.layers[0].mega_layer.ema_gate.damping_factor[0, 0] += 0.1
        perturbed.decoder.mega.layers[1].cross_attn.k_proj.weight[0, 0] += 0.1
    diffs = mt_diffs(mt_outputs(perturbed, ref, steps=steps), ref)
    assert diffs["encoder_out"] > 1e-4 and diffs["log_probs"] > 1e-4, diffs

    config = json.loads((directory / "config.json").read_text())
    config["decoder"]["scale_embeddings"] = False  # a wrong field: the original scales by sqrt(d)
    (directory / "config.json").write_text(json.dumps(config))
    diffs = mt_diffs(mt_outputs(load_encoder_decoder(directory), ref, steps=steps), ref)
    assert diffs["log_probs"] > 1e-3 and diffs["encoder_out"] < 1e-5, diffs


@pytest.mark.fairseq2
@pytest.mark.parametrize(("variant", "layout"), MT_CHECKPOINTS, ids=[f"{v}-{l}" for v, l in MT_CHECKPOINTS])
def test_translation_in_fairseq2_matches_the_original(variant: str, layout: str, tmp_path: Path) -> None:
    """``--to fairseq2``: the mega_seq2seq model on the unpadded first row (fairseq2 layouts pad on the right)."""
    from fairseq2.nn import BatchLayout
    from safetensors.torch import load_file

    from mega_plugin.adapters.fairseq2.seq2seq_config import MegaSeq2SeqConfig
    from mega_plugin.adapters.fairseq2.seq2seq_factory import create_mega_seq2seq_model
    from mega_plugin.adapters.fairseq2.seq2seq_interop import convert_mega_seq2seq_state_dict

    fixture = load_fixture("mt_wmt16")
    ref = fixture.reference(variant=variant)
    directory = convert("mt_wmt16", tmp_path, variant=variant, layout=layout, target="fairseq2")
    assert (directory / f"{directory.name}.yaml").is_file()
    config = MegaSeq2SeqConfig.from_hf_config(json.loads((directory / "config.json").read_text()))
    model = create_mega_seq2seq_model(config)
    model.load_state_dict(convert_mega_seq2seq_state_dict(load_file(str(directory / "model.safetensors")), config))
    src, prev = ref["input.src_tokens"][:1], ref["input.prev_output_tokens"][:1]
    assert not src.eq(PAD).any() and not prev.eq(PAD).any()
    with torch.no_grad():
        logits = model.eval()(src, BatchLayout.of(src), prev, BatchLayout.of(prev))
    diff = max_diff(torch.log_softmax(logits.float(), dim=-1), ref["log_probs"][:1])
    assert diff < fixture.tolerance(variant)["atol"], diff
    with torch.no_grad():  # the comparison can fail: one changed weight
        model.encoder.layers[1].mega_layer.ema_gate.decay_factor[0, 0] += 0.1
        perturbed = model(src, BatchLayout.of(src), prev, BatchLayout.of(prev))
    assert max_diff(torch.log_softmax(perturbed.float(), dim=-1), ref["log_probs"][:1]) > 1e-4
