"""Incremental decoding through fairseq2's state bag and generators equals full forwards."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fs2_helpers import build_model, require_fairseq2

require_fairseq2()
pytestmark = pytest.mark.fairseq2

TOLERANCE = 1e-5


def _vocab_info(config: Any) -> Any:
    from fairseq2.data.tokenizers import VocabularyInfo

    return VocabularyInfo(size=config.vocab_size, unk_idx=3, bos_idx=0, eos_idx=2, pad_idx=config.pad_idx)


@torch.no_grad()
@pytest.mark.parametrize("prefill", [1, 5, 8], ids=["prefill1", "prefill5", "prefill-chunk"])
def test_stepwise_logits_equal_full_forward(tiny_config: Any, prefill: int) -> None:
    from fairseq2.nn import BatchLayout, IncrementalStateBag

    from mega_plugin.adapters.fairseq2.model import MegaIncrementalState

    model = build_model(tiny_config, scale=0.3)
    seqs = torch.randint(4, 100, (3, 21))
    full = model(seqs, BatchLayout.of(seqs))
    bag = IncrementalStateBag(64)
    chunks = [seqs[:, :prefill]] + [seqs[:, t : t + 1] for t in range(prefill, seqs.shape[1])]
    start = 0
    for chunk in chunks:
        logits = model(chunk, BatchLayout.of(chunk), state_bag=bag)
        assert (logits - full[:, start : start + chunk.shape[1]]).abs().max() <= TOLERANCE
        start += chunk.shape[1]
        bag.increment_step_nr(chunk.shape[1]) if start < 64 else None
    state = bag.maybe_get_state(model, MegaIncrementalState)
    assert state is not None and state.state.position == seqs.shape[1]
    assert bag.size_bytes() == state.size_bytes() > 0
    # Chunked attention: the cache holds at most one chunk of keys, whatever the length.
    assert all(layer.cached_length <= tiny_config.chunk_size for layer in state.state.layers)


@torch.no_grad()
def test_state_bag_step_mismatch_is_an_error(tiny_config: Any) -> None:
    from fairseq2.nn import BatchLayout, IncrementalStateBag

    model = build_model(tiny_config)
    seqs = torch.randint(4, 100, (1, 4))
    bag = IncrementalStateBag(16)
    model(seqs, BatchLayout.of(seqs), state_bag=bag)
    with pytest.raises(ValueError, match="step"):
        model(seqs[:, :1], BatchLayout.of(seqs[:, :1]), state_bag=bag)  # step_nr not incremented


def _greedy_by_full_forward(model: Any, prompt: torch.Tensor, steps: int, eos: int) -> list[int]:
    from fairseq2.nn import BatchLayout

    seq = prompt.clone()
    out = []
    for _ in range(steps):
        logits = model(seq[None], BatchLayout.of(seq[None]))[0, -1].clone()
        logits[model.pad_idx] = -torch.inf  # the generators never emit PAD
        token = int(logits.argmax())
        out.append(token)
        if token == eos:
            break
        seq = torch.cat([seq, torch.tensor([token])])
    return out


def _check_greedy(model: Any, prompt: torch.Tensor, generated: list[int], eos: int, *, limit: int) -> None:
    assert len(set(generated)) > 3, f"degenerate model output proves little: {generated}"
    # The generators end every hypothesis with EOS: forced at the length limit, else chosen.
    # The limit is max_gen_len past the longest prompt of the batch.
    expected = _greedy_by_full_forward(model, prompt, len(generated), eos)
    if len(generated) == limit and generated[-1] == eos and expected[-1] != eos:
        generated, expected = generated[:-1], expected[:-1]
    assert generated == expected


@torch.no_grad()
def test_greedy_sampling_generator_equals_argmax_of_full_forward(tiny_config: Any) -> None:
    from fairseq2.generation.sampling import SamplingSequenceGenerator, TopKSampler
    from fairseq2.nn import BatchLayout

    model = build_model(tiny_config, seed=4, scale=0.3)  # varied, non-repeating argmax
    vocab = _vocab_info(tiny_config)
    prompts = torch.randint(4, 100, (3, 6))
    prompt_lens = [6, 3, 5]  # ragged prompts: the generator pads them and forces prompt tokens
    prompts[1, 3:] = tiny_config.pad_idx
    prompts[2, 5:] = tiny_config.pad_idx
    generator = SamplingSequenceGenerator(
        model, vocab, TopKSampler(k=1), max_gen_len=19, echo_prompt=True, prefill_chunk_size=4
    )
    output = generator(prompts, BatchLayout.of(prompts, prompt_lens))
    for row, hypotheses in enumerate(output.hypotheses):
        prompt = prompts[row, : prompt_lens[row]]
        assert torch.equal(hypotheses[0].seq[: len(prompt)], prompt)
        generated = hypotheses[0].seq[len(prompt) :].tolist()
        assert generated, "nothing generated"
        _check_greedy(model, prompt, generated, vocab.eos_idx, limit=19 + max(prompt_lens) - len(prompt))


@torch.no_grad()
def test_beam_search_runs_and_beam_one_is_greedy(tiny_config: Any) -> None:
    from fairseq2.generation.beam_search import BeamSearchSequenceGenerator
    from fairseq2.nn import BatchLayout

    model = build_model(tiny_config, seed=5, scale=0.3)
    vocab = _vocab_info(tiny_config)
    prompts = torch.randint(4, 100, (2, 5))
    beam = BeamSearchSequenceGenerator(model, vocab, beam_size=3, max_gen_len=12)
    output = beam(prompts, BatchLayout.of(prompts))
    assert [len(h) for h in output.hypotheses] == [3, 3]
    for hypotheses in output.hypotheses:
        scores = [float(h.score) for h in hypotheses]
        assert scores == sorted(scores, reverse=True)
    greedy = BeamSearchSequenceGenerator(model, vocab, beam_size=1, max_gen_len=12, echo_prompt=True)
    output = greedy(prompts, BatchLayout.of(prompts))
    for row, hypotheses in enumerate(output.hypotheses):
        generated = hypotheses[0].seq[prompts.shape[1] :].tolist()
        _check_greedy(model, prompts[row], generated, vocab.eos_idx, limit=12)


@torch.no_grad()
def test_state_bag_reorder_follows_the_new_batch_order(tiny_config: Any) -> None:
    # Beam search calls bag.reorder(new_order): later steps must continue the reordered rows.
    from fairseq2.nn import BatchLayout, IncrementalStateBag

    model = build_model(tiny_config, scale=0.3)
    seqs = torch.randint(4, 100, (3, 14))
    order = torch.tensor([2, 0, 0])
    bag = IncrementalStateBag(64)
    prefix = seqs[:, :10]  # crosses a chunk boundary (chunk_size 8)
    model(prefix, BatchLayout.of(prefix), state_bag=bag)
    bag.increment_step_nr(prefix.shape[1])
    bag.reorder(order)
    reordered = seqs[order]
    full = model(reordered, BatchLayout.of(reordered))
    for t in range(10, seqs.shape[1]):
        step = reordered[:, t : t + 1]
        logits = model(step, BatchLayout.of(step), state_bag=bag)
        bag.increment_step_nr(1)
        assert (logits[:, 0] - full[:, t]).abs().max() <= TOLERANCE, t


@torch.no_grad()
@pytest.mark.parametrize(
    "overrides",
    [{}, {"use_chunking": False, "chunk_size": -1}, {"add_final_norm": True, "scale_embeddings": True}],
    ids=["chunk8", "unchunked", "final-norm-scaled-embeddings"],
)
def test_static_decoder_logits_equal_full_forward(overrides: dict[str, Any]) -> None:
    """``static_decoder(model)``: the logits after each fed token equal the full forward's there."""
    from fairseq2.nn import BatchLayout

    from mega_plugin.adapters.fairseq2.config import MegaLMConfig
    from mega_plugin.adapters.fairseq2.static_decoding import static_decoder
    from fs2_helpers import TINY_HF

    model = build_model(MegaLMConfig.from_hf_config({**TINY_HF, **overrides, "model_type": "mega"}), scale=0.3)
    seqs = torch.randint(4, 100, (3, 21))
    full = model(seqs, BatchLayout.of(seqs))  # (N, S, V)
    decoder = static_decoder(model, max_length=seqs.shape[1])
    prompt = 3
    logits = [decoder.prefill(seqs[:, :prompt])]
    logits += [decoder.step(seqs[:, position]) for position in range(prompt, seqs.shape[1] - 1)]
    assert (torch.stack(logits, dim=1) - full[:, prompt - 1 : -1]).abs().max() <= TOLERANCE
    with pytest.raises(TypeError, match="MegaCausalLM"):
        static_decoder(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
