"""``generate()`` keywords MEGA once dropped: attentions / hidden states per step, a start from
``inputs_embeds``, and ``logits_to_keep`` (4.57 and 5.x).

Each test compares generate()'s per-step outputs with an uncached full forward over the same
prefix (the decoding equals the full forward: tests/hf/test_generation.py), so a dropped
keyword (None where tensors belong) or a mis-sliced step fails.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM  # noqa: E402

pytestmark = pytest.mark.hf

NEW_TOKENS = 3
TOLERANCE = 1e-5


def build(*, chunking: bool, seed: int = 0) -> MegaForCausalLM:
    torch.manual_seed(seed)
    config = MegaConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        intermediate_size=24,
        shared_representation_size=8,
        ema_projection_size=4,
        nffn_hidden_size=20,
        max_positions=64,
        is_decoder=True,
        bidirectional=False,
        use_chunking=chunking,
        chunk_size=4 if chunking else -1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=None,
    )
    return MegaForCausalLM(config).eval()


def prompt(batch: int = 2, length: int = 5) -> Tensor:
    return torch.randint(3, 40, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("chunking", [False, True], ids=["full", "chunk4"])
def test_generate_returns_attentions_and_hidden_states_of_every_step(chunking: bool) -> None:
    model = build(chunking=chunking)
    ids = prompt()
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_attentions=True,
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
        full = model(out.sequences, output_attentions=True, output_hidden_states=True)
    layers = model.config.num_hidden_layers
    assert len(out.attentions) == len(out.hidden_states) == NEW_TOKENS
    for step, (attentions, hidden_states) in enumerate(zip(out.attentions, out.hidden_states)):
        assert len(attentions) == layers and all(isinstance(a, Tensor) for a in attentions), step
        assert len(hidden_states) == layers + 1, step
        # step 0 fed the prompt, step k>0 one token at position L+k-1
        positions = slice(0, ids.shape[1]) if step == 0 else slice(ids.shape[1] + step - 1, ids.shape[1] + step)
        for ours, whole in zip(hidden_states, full.hidden_states):
            torch.testing.assert_close(ours, whole[:, positions], atol=TOLERANCE, rtol=0)
    if not chunking:  # (B, 1, L, L) over the prompt, as the full forward's top-left block
        prompt_len = ids.shape[1]
        for ours, whole in zip(out.attentions[0], full.attentions):
            torch.testing.assert_close(ours, whole[..., :prompt_len, :prompt_len], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("chunking", [False, True], ids=["full", "chunk4"])
def test_generate_starts_from_inputs_embeds(chunking: bool) -> None:
    model = build(chunking=chunking)
    ids = prompt()
    embedding = model.get_input_embeddings()
    with torch.no_grad():
        # embeddings that are no row of the table: a greedy loop over full forwards is the truth
        embeds = embedding(ids) * 1.5 + 0.01
        generated = model.generate(inputs_embeds=embeds, max_new_tokens=NEW_TOKENS, do_sample=False)
        expected = []
        sequence = embeds
        for _ in range(NEW_TOKENS):
            token = model(inputs_embeds=sequence).logits[:, -1].argmax(-1)
            expected.append(token)
            sequence = torch.cat([sequence, embedding(token)[:, None]], dim=1)
        # table rows: the same tokens as generate(input_ids) continues with
        from_ids = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        from_table_rows = model.generate(inputs_embeds=embedding(ids), max_new_tokens=NEW_TOKENS, do_sample=False)
    assert torch.equal(generated, torch.stack(expected, dim=1))
    assert torch.equal(from_table_rows, from_ids[:, ids.shape[1] :])


def test_logits_to_keep() -> None:
    model = build(chunking=False)
    ids = prompt(length=7)
    with torch.no_grad():
        every = model(ids).logits
        last_two = model(ids, logits_to_keep=2).logits
        chosen = model(ids, logits_to_keep=torch.tensor([0, 3])).logits
        zero = model(ids, logits_to_keep=0).logits
    torch.testing.assert_close(last_two, every[:, -2:], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(chosen, every[:, [0, 3]], atol=TOLERANCE, rtol=0)
    assert torch.equal(zero, every)


@pytest.mark.parametrize("bad", [-1, 1.5, torch.zeros(2, 2, dtype=torch.long)], ids=["negative", "float", "2d"])
def test_logits_to_keep_rejects_bad_values(bad: object) -> None:
    model = build(chunking=False)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(prompt(), logits_to_keep=bad)


def test_generate_asks_for_the_last_logits_only() -> None:
    """generate() passes logits_to_keep=1 to a forward that names it; the greedy tokens stay."""
    model = build(chunking=False)
    seen: list[object] = []

    def record(_module: object, _args: object, kwargs: dict[str, object]) -> None:
        seen.append(kwargs.get("logits_to_keep"))

    ids = prompt()
    with torch.no_grad():
        handle = model.register_forward_pre_hook(record, with_kwargs=True)
        spied = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        handle.remove()
        plain = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert seen and all(value == 1 for value in seen), seen
    assert torch.equal(plain, spied)
