"""Incremental decoding with encoder states (HF adapter): cache == full forward, keys once.

- ``MegaForCausalLM`` with ``add_cross_attention=True``: a prefill then one token at a time
  (across chunk boundaries when chunking) gives the logits of the full forward (<= 1e-4), and
  the encoder keys/values are projected once per layer (forward hooks count ``k_proj`` /
  ``v_proj`` calls); beam-search reordering moves the cached encoder keys with the batch.
- ``generate()`` with ``encoder_hidden_states`` (greedy and beam) gives the same tokens with
  and without the cache, and greedy equals a loop of full forwards taking the argmax.
- ``EncoderDecoderModel`` (MEGA encoder + MEGA decoder): ``generate()`` feeds the decoder one
  token per step through MEGA's cache, projects the encoder once, and matches the uncached run.
- The 4.57.6 reference's cached cross-attention uses query position ``t + 1`` for the token at
  position ``t`` (it counts the self-attention keys *before* this step and adds one; with
  chunking that count resets at every chunk boundary). Ours is tested against the full
  forward (the formula); the reference's shift is pinned so the difference stays documented.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import NO_DROPOUT, TINY, randomize_  # noqa: E402
from mega_plugin.adapters.hf import MegaCache, MegaConfig, MegaForCausalLM, MegaModel  # noqa: E402
from _support.environment import requires_reference  # noqa: E402
from transformers import EncoderDecoderModel  # noqa: E402

CHUNK = 4
TOLERANCE = 1e-4
ATTENTIONS = ("softmax", "laplace", "relu2")


def decoder_kwargs(attention: str = "softmax", chunked: bool = False, **overrides: Any) -> dict[str, Any]:
    kwargs = dict(TINY)
    kwargs.update(NO_DROPOUT)
    kwargs.update(
        attention_activation=attention,
        is_decoder=True,
        bidirectional=False,
        add_cross_attention=True,
        use_chunking=chunked,
        chunk_size=CHUNK if chunked else -1,
        relative_positional_bias="rotary",
    )
    kwargs.update(overrides)
    return kwargs


def make_decoder(attention: str = "softmax", chunked: bool = False, **overrides: Any) -> MegaForCausalLM:
    torch.manual_seed(0)
    model = MegaForCausalLM(MegaConfig(**decoder_kwargs(attention, chunked, **overrides)))
    randomize_(model, 0)
    strengthen_biases_(model)
    return model.eval()


@torch.no_grad()
def strengthen_biases_(model: torch.nn.Module) -> None:
    """Strong relative biases, so that a wrong query position shows in the outputs."""
    generator = torch.Generator().manual_seed(11)
    for name, parameter in model.named_parameters():
        if name.endswith(("rel_pos_bias.alpha", "rel_pos_bias.b_param", "rel_pos_bias.rel_pos_bias")):
            parameter.copy_(torch.randn(parameter.shape, generator=generator))


def encoder_inputs(batch: int = 3, length: int = 7, *, seed: int = 5) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, length, TINY["hidden_size"], generator=generator)
    real = (length - 2 * torch.arange(batch)).clamp(min=1)
    return states, (torch.arange(length).unsqueeze(0) < real.unsqueeze(1)).long()


class CallCounter:
    """Counts forward calls of every module whose name ends with ``suffix``."""

    def __init__(self, model: torch.nn.Module, suffix: str) -> None:
        self.calls = 0
        self.handles = [
            module.register_forward_hook(self._hook) for name, module in model.named_modules() if name.endswith(suffix)
        ]
        assert self.handles, suffix

    def _hook(self, *_: Any) -> None:
        self.calls += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def stepwise_logits(model: MegaForCausalLM, ids: Tensor, states: Tensor, mask: Tensor, prefill: int) -> tuple[Tensor, MegaCache]:
    """A prefill of ``prefill`` tokens, then one token per call; encoder inputs passed every call."""
    outputs, cache = [], None
    for start, end in [(0, prefill)] + [(t, t + 1) for t in range(prefill, ids.shape[1])]:
        out = model(
            ids[:, start:end],
            encoder_hidden_states=states,
            encoder_attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
        )
        outputs.append(out.logits)
        cache = out.past_key_values if hasattr(out, "past_key_values") and out.past_key_values is not None else out.cache
    assert isinstance(cache, MegaCache)
    return torch.cat(outputs, dim=1), cache


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("chunked", [False, True], ids=["nochunk", "chunk4"])
def test_cached_logits_equal_the_full_forward(attention: str, chunked: bool) -> None:
    model = make_decoder(attention, chunked)
    states, mask = encoder_inputs()
    ids = torch.randint(3, 60, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids, encoder_hidden_states=states, encoder_attention_mask=mask, use_cache=False).logits
        keys, values = CallCounter(model, "cross_attn.k_proj"), CallCounter(model, "cross_attn.v_proj")
        cached, cache = stepwise_logits(model, ids, states, mask, prefill=3)
    assert keys.calls == values.calls == TINY["num_hidden_layers"], "encoder keys/values must be projected once"
    assert (cached - full).abs().max() <= TOLERANCE
    layer = cache.state.layers[0]
    assert layer.cross_keys is not None and layer.cross_keys.shape == (3, 7, TINY["shared_representation_size"])
    if chunked:
        assert layer.cached_length == 11 % CHUNK  # self-attention keys of the current chunk only


def test_beam_reorder_moves_the_cached_encoder_keys() -> None:
    model = make_decoder(chunked=True)
    states, mask = encoder_inputs()
    ids = torch.randint(3, 60, (3, 9), generator=torch.Generator().manual_seed(2))
    order = torch.tensor([1, 1, 2])
    with torch.no_grad():
        _, cache = stepwise_logits(model, ids[:, :6], states, mask, prefill=3)
        cache.reorder_cache(order)
        rest = model(ids[order, 6:], past_key_values=cache, use_cache=True).logits  # encoder inputs from the cache
        full = model(ids[order], encoder_hidden_states=states[order], encoder_attention_mask=mask[order]).logits
    assert (rest - full[:, 6:]).abs().max() <= TOLERANCE


def greedy_by_full_forwards(model: MegaForCausalLM, ids: Tensor, states: Tensor, mask: Tensor, steps: int) -> Tensor:
    with torch.no_grad():
        for _ in range(steps):
            logits = model(ids, encoder_hidden_states=states, encoder_attention_mask=mask, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam3"])
def test_generate_with_encoder_states(num_beams: int) -> None:
    model = make_decoder(chunked=True)
    states, mask = encoder_inputs()
    prompt = torch.randint(3, 60, (3, 3), generator=torch.Generator().manual_seed(3))
    common: dict[str, Any] = dict(
        encoder_hidden_states=states,
        encoder_attention_mask=mask,
        max_new_tokens=7,
        min_new_tokens=7,
        do_sample=False,
        num_beams=num_beams,
        pad_token_id=TINY["pad_token_id"],
    )
    keys = CallCounter(model, "cross_attn.k_proj")
    cached = model.generate(prompt, use_cache=True, **common)
    assert keys.calls == TINY["num_hidden_layers"]
    keys.remove()
    uncached = model.generate(prompt, use_cache=False, **common)
    assert cached.shape == (3, 10)
    assert torch.equal(cached, uncached)
    if num_beams == 1:
        assert torch.equal(cached, greedy_by_full_forwards(model, prompt, states, mask, 7))


def make_seq2seq() -> EncoderDecoderModel:
    torch.manual_seed(0)
    encoder_kwargs = dict(TINY)
    encoder_kwargs.update(NO_DROPOUT)
    encoder = MegaModel(MegaConfig(**encoder_kwargs), add_pooling_layer=False)
    model = EncoderDecoderModel(encoder=encoder, decoder=make_decoder(chunked=True))
    model.config.decoder_start_token_id = TINY["bos_token_id"]
    model.config.pad_token_id = TINY["pad_token_id"]
    return model.eval()


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam3"])
def test_encoder_decoder_generate_uses_the_mega_cache(num_beams: int) -> None:
    model = make_seq2seq()
    source = torch.randint(3, 60, (2, 6), generator=torch.Generator().manual_seed(4))
    source_mask = torch.ones_like(source)
    source_mask[1, 4:] = 0
    lengths: list[int] = []
    handle = model.decoder.register_forward_pre_hook(
        lambda _module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    keys = CallCounter(model.decoder, "cross_attn.k_proj")
    common: dict[str, Any] = dict(attention_mask=source_mask, max_new_tokens=6, min_new_tokens=6, num_beams=num_beams)
    cached = model.generate(source, use_cache=True, **common)
    handle.remove()
    assert lengths == [1] * 6, lengths  # decoder start token, then one new token per step
    assert keys.calls == TINY["num_hidden_layers"]
    keys.remove()
    uncached = model.generate(source, use_cache=False, **common)
    assert torch.equal(cached, uncached)


def test_foreign_cache_with_tokens_is_refused() -> None:
    from transformers import DynamicCache

    model = make_decoder()
    states, mask = encoder_inputs()
    foreign = DynamicCache()
    foreign.update(torch.zeros(3, 1, 2, 4), torch.zeros(3, 1, 2, 4), 0)
    with pytest.raises(TypeError, match="MegaCache"):
        model(torch.full((3, 1), 5), encoder_hidden_states=states, past_key_values=foreign, use_cache=True)


# --- the reference's cached cross-attention positions ---------------------------------------


@requires_reference()
def test_reference_cached_cross_attention_is_one_position_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents a reference defect; ours follows the full forward (tested above)."""
    from mega_hf_helpers import build_reference, HEADS_BY_ID, load_strict
    from mega_plugin.core.cross_attention import GatedCrossAttention

    kwargs = decoder_kwargs(use_cache=True)
    reference = build_reference(HEADS_BY_ID["CausalLM"], kwargs)
    strengthen_biases_(reference)
    ours = make_decoder()
    load_strict(ours, reference)
    states, mask = encoder_inputs()
    ids = torch.randint(3, 60, (3, 7), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = reference(ids, encoder_hidden_states=states, encoder_attention_mask=mask, use_cache=False).logits
        out = reference(ids[:, :3], encoder_hidden_states=states, encoder_attention_mask=mask, use_cache=True)
        steps, past = [out.logits], out.past_key_values
        for t in range(3, 7):
            out = reference(
                ids[:, t : t + 1], encoder_hidden_states=states, encoder_attention_mask=mask, past_key_values=past, use_cache=True
            )
            steps.append(out.logits)
            past = out.past_key_values
        reference_cached = torch.cat(steps, dim=1)
        assert (reference_cached[:, :3] - full[:, :3]).abs().max() <= 1e-5  # the prefill is right
        assert (reference_cached[:, 3:] - full[:, 3:]).abs().max() > 1e-3  # the steps are not

        # Ours, with every single-token step moved one position ahead, reproduces the reference.
        original = GatedCrossAttention._bias

        def one_ahead(self: GatedCrossAttention, query_length: int, key_length: int, query_offset: int) -> Tensor:
            return original(self, query_length, key_length, query_offset + (query_offset > 0 and query_length == 1))

        monkeypatch.setattr(GatedCrossAttention, "_bias", one_ahead)
        shifted, _ = stepwise_logits(ours, ids, states, mask, prefill=3)
    # Cached-vs-convolutional EMA roundoff (amplified by the strong biases): the cached tolerance.
    assert (shifted - reference_cached).abs().max() <= TOLERANCE
