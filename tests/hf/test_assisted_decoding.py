"""Assisted decoding (an assistant model, prompt lookup) on transformers 5.x gives greedy's tokens.

The oracle is transformers' contract: assisted greedy decoding returns exactly the tokens of
plain greedy decoding, whatever the drafts; the drafts here are mostly wrong (an assistant with
other weights), so the model's cache is rolled back inside its verifying calls again and again
(a spy counts those crops). 4.57 refuses assisted decoding for stateful models itself.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers

pytestmark = pytest.mark.hf

from mega_plugin.adapters.hf import MegaCache, MegaConfig, MegaForCausalLM  # noqa: E402
from mega_plugin.backends import restore  # noqa: E402

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
CHUNKING = {"chunk4": dict(use_chunking=True, chunk_size=4), "unchunked": {}}


def causal_lm(layers: int, seed: int, **extra: Any) -> MegaForCausalLM:
    torch.manual_seed(seed)
    config = MegaConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=layers, intermediate_size=24, ema_projection_size=4,
        shared_representation_size=8, nffn_hidden_size=20, max_positions=64, is_decoder=True,
        bidirectional=False, pad_token_id=1, bos_token_id=0, eos_token_id=None, initializer_range=0.5, **extra,
    )
    return MegaForCausalLM(config).eval()


def rollbacks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the number of tokens each crop of a MegaCache removed."""
    removed: list[int] = []
    real = MegaCache.crop

    def spy(self: MegaCache, amount: int) -> None:
        before = self.get_seq_length()
        real(self, amount)
        removed.append(before - self.get_seq_length())

    monkeypatch.setattr(MegaCache, "crop", spy)
    return removed


PROMPT = torch.tensor([[5, 9, 5, 9, 5, 9, 12, 7]])
SETTINGS = dict(max_new_tokens=14, min_new_tokens=14, do_sample=False)


@pytest.mark.skipif(not TRANSFORMERS_5, reason="transformers 4.57 refuses assisted decoding for stateful models")
@pytest.mark.parametrize("kernels", ["fast", "reference"])
@pytest.mark.parametrize("chunking", list(CHUNKING))
@pytest.mark.parametrize("drafts", ["assistant", "prompt-lookup"])
def test_assisted_greedy_equals_greedy(drafts: str, chunking: str, kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = causal_lm(2, 0, **CHUNKING[chunking])
    if kernels == "reference":
        restore(model)
    expected = model.generate(PROMPT, **SETTINGS)
    removed = rollbacks(monkeypatch)
    extra = dict(assistant_model=causal_lm(1, 3, **CHUNKING[chunking])) if drafts == "assistant" else dict(prompt_lookup_num_tokens=3)
    assisted = model.generate(PROMPT, **SETTINGS, **extra)
    torch.testing.assert_close(assisted, expected, rtol=0, atol=0)
    assert any(count > 0 for count in removed), removed  # drafts were rejected and rolled back


@pytest.mark.skipif(not TRANSFORMERS_5, reason="transformers 4.57 refuses assisted decoding for stateful models")
def test_assisted_sampling_runs_and_the_cache_ends_at_the_sequence() -> None:
    model = causal_lm(2, 0, use_chunking=True, chunk_size=4)
    torch.manual_seed(11)
    out = model.generate(
        PROMPT, max_new_tokens=10, min_new_tokens=10, do_sample=True, assistant_model=causal_lm(1, 3, use_chunking=True, chunk_size=4),
        return_dict_in_generate=True,
    )
    assert out.sequences.shape == (1, PROMPT.shape[1] + 10)
    # the cache holds every token but the last one generated (it is fed at the next step)
    assert out.cache.get_seq_length() in (out.sequences.shape[1] - 1, out.sequences.shape[1])


@pytest.mark.skipif(TRANSFORMERS_5, reason="4.57's own refusal")
def test_transformers_4_57_refuses_it_with_its_own_message() -> None:
    model = causal_lm(2, 0)
    with pytest.raises(ValueError, match="stateful"):
        model.generate(PROMPT, **SETTINGS, assistant_model=causal_lm(1, 3))
