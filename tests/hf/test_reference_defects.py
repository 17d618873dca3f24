"""Behaviour where the reference MEGA is wrong: ours is checked against a formula or a property.

Runs on both transformers versions (no reference needed).

- lengths that are not a multiple of ``chunk_size`` (the reference crashes): equal to running
  on an explicitly padded input whose pad positions have attention_mask 0;
- a causal sequence shorter than a chunk (the reference crashes): equal to the same model
  without chunking, and to explicit padding;
- left padding under a causal model (the reference's outputs change): the real tokens' outputs
  equal the unpadded sequence run alone;
- weights changed after ``.eval()`` (the reference keeps a stale EMA kernel): they take effect;
- ``return_dict=False`` (the reference's tuples hold None): no None anywhere;
- a truncated EMA with the decoding cache on (the reference then ignores truncation): same
  outputs as without the cache.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import (  # noqa: E402
    HEADS,
    HEADS_BY_ID,
    TINY,
    assert_close,
    build_ours,
    make_batch,
    max_diff,
    randomize_,
)

MODEL = HEADS_BY_ID["Model"]


def tiny(**overrides: Any) -> dict[str, Any]:
    kwargs = dict(TINY)
    kwargs.update(overrides)
    return kwargs


def causal(**overrides: Any) -> dict[str, Any]:
    return tiny(is_decoder=True, bidirectional=False, **overrides)


def ids(generator: torch.Generator, batch: int, length: int) -> torch.Tensor:
    return torch.randint(3, TINY["vocab_size"], (batch, length), generator=generator)


def hidden(model: torch.nn.Module, **call: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(**call, use_cache=False, return_dict=True).last_hidden_state


ATTENTION_BIAS = list(itertools.product(("softmax", "laplace", "relu2"), ("rotary", "simple")))


# --------------------------------------------------------------------------------------
# Chunking with any length
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["causal", "bidir"])
@pytest.mark.parametrize(("attention", "bias"), ATTENTION_BIAS, ids=[f"{a}-{b}" for a, b in ATTENTION_BIAS])
def test_length_not_multiple_of_chunk_equals_explicit_padding(attention: str, bias: str, mode: str) -> None:
    overrides = dict(attention_activation=attention, relative_positional_bias=bias, use_chunking=True, chunk_size=8)
    kwargs = causal(**overrides) if mode == "causal" else tiny(bidirectional=True, **overrides)
    model = build_ours(MODEL, kwargs)
    generator = torch.Generator().manual_seed(0)
    length, padded_length = 13, 16
    input_ids = ids(generator, 3, length)
    mask = torch.ones(3, length, dtype=torch.long)
    mask[1, 10:] = 0  # the batch also has ordinary right padding
    mask[2, 4:] = 0
    input_ids = input_ids.masked_fill(mask == 0, 1)
    pad = padded_length - length
    explicit_ids = torch.cat([input_ids, torch.full((3, pad), 1)], dim=1)
    explicit_mask = torch.cat([mask, torch.zeros(3, pad, dtype=torch.long)], dim=1)
    actual = hidden(model, input_ids=input_ids, attention_mask=mask)
    expected = hidden(model, input_ids=explicit_ids, attention_mask=explicit_mask)[:, :length]
    valid = mask.bool()
    assert_close(actual[valid], expected[valid], f"L={length}, chunk 8 vs explicit padding to {padded_length}")
    # Without any attention mask too (only the implicit chunk padding).
    actual = hidden(model, input_ids=input_ids)
    expected = hidden(model, input_ids=explicit_ids, attention_mask=torch.cat([torch.ones_like(mask), explicit_mask[:, length:]], 1))
    assert_close(actual, expected[:, :length], "no mask: implicit vs explicit chunk padding")


@pytest.mark.parametrize(("attention", "bias"), ATTENTION_BIAS, ids=[f"{a}-{b}" for a, b in ATTENTION_BIAS])
def test_causal_sequence_shorter_than_chunk(attention: str, bias: str) -> None:
    kwargs = causal(attention_activation=attention, relative_positional_bias=bias, use_chunking=True, chunk_size=8)
    model = build_ours(HEADS_BY_ID["CausalLM"], kwargs)
    # The same weights without chunking (chunk_size stays 8: the simple bias keeps its layout).
    unchunked = build_ours(HEADS_BY_ID["CausalLM"], dict(kwargs, use_chunking=False), seed=99)
    unchunked.load_state_dict(model.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(1)
    for length in (1, 5, 7):
        input_ids = ids(generator, 2, length)
        with torch.no_grad():
            actual = model(input_ids=input_ids).logits
            plain = unchunked(input_ids=input_ids).logits
            explicit = model(
                input_ids=torch.cat([input_ids, torch.full((2, 8 - length), 1)], 1),
                attention_mask=torch.cat([torch.ones(2, length), torch.zeros(2, 8 - length)], 1).long(),
            ).logits[:, :length]
        assert actual.shape == (2, length, TINY["vocab_size"])
        assert_close(actual, plain, f"L={length} < chunk vs no chunking")
        assert_close(actual, explicit, f"L={length} < chunk vs explicit padding")


# --------------------------------------------------------------------------------------
# Left padding under a causal model
# --------------------------------------------------------------------------------------

LEFT_PAD_CASES = [
    pytest.param(attention, bias, None, (0, 3, 7), id=f"{attention}-{bias}-nochunk")
    for attention, bias in itertools.product(("softmax", "laplace", "relu2"), ("rotary", "simple"))
] + [
    # With chunking, left padding by whole chunks keeps every real token's chunk.
    pytest.param(attention, bias, 8, (0, 8, 16), id=f"{attention}-{bias}-chunk8")
    for attention, bias in itertools.product(("softmax", "laplace"), ("rotary", "simple"))
]


@pytest.mark.parametrize(("attention", "bias", "chunk", "pads"), LEFT_PAD_CASES)
def test_left_padding_causal_equals_unpadded(attention: str, bias: str, chunk: int | None, pads: tuple[int, ...]) -> None:
    overrides: dict[str, Any] = dict(attention_activation=attention, relative_positional_bias=bias, truncation=None)
    if chunk is not None:
        overrides.update(use_chunking=True, chunk_size=chunk)
    model = build_ours(HEADS_BY_ID["CausalLM"], causal(**overrides))
    generator = torch.Generator().manual_seed(2)
    length = 24
    input_ids = ids(generator, len(pads), length)
    mask = torch.ones(len(pads), length, dtype=torch.long)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    input_ids = input_ids.masked_fill(mask == 0, 1)
    with torch.no_grad():
        batched = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        for row, pad in enumerate(pads):
            alone = model(input_ids=input_ids[row : row + 1, pad:], use_cache=False).logits
            assert_close(batched[row, pad:], alone[0], f"row {row} (left pad {pad})")


# --------------------------------------------------------------------------------------
# Weights changed after .eval()
# --------------------------------------------------------------------------------------

EVAL_CHANGE_CASES = {
    "bidir": tiny(bidirectional=True),
    "causal": causal(),
    "causal-truncated-chunk8": causal(truncation=5, use_chunking=True, chunk_size=8),
}


@pytest.mark.parametrize("name", list(EVAL_CHANGE_CASES))
def test_weight_changes_after_eval_take_effect(name: str) -> None:
    kwargs = EVAL_CHANGE_CASES[name]
    model = build_ours(MODEL, kwargs).eval()
    generator = torch.Generator().manual_seed(3)
    input_ids = ids(generator, 2, 16)
    before = hidden(model, input_ids=input_ids)
    hidden(model, input_ids=input_ids[:, :8])  # anything a cache would keep: a shorter length too

    # load_state_dict with new weights: the output follows them.
    other = build_ours(MODEL, kwargs, seed=7).eval()
    model.load_state_dict(other.state_dict(), strict=True)
    after = hidden(model, input_ids=input_ids)
    assert max_diff(after, before) > 1e-3
    assert_close(after, hidden(other, input_ids=input_ids), "after load_state_dict")

    # In-place edits of the EMA parameters in eval mode take effect as well.
    with torch.no_grad():
        for layer in model.layers:
            layer.mega_layer.ema_gate.damping_factor.add_(0.5)
            layer.mega_layer.ema_gate.kernel_projection_matrix.mul_(-1.0)
    edited = hidden(model, input_ids=input_ids)
    assert max_diff(edited, after) > 1e-3
    fresh = build_ours(MODEL, kwargs, seed=11).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert_close(edited, hidden(fresh, input_ids=input_ids), "after in-place edits")

    # .to() after eval moves everything (no stale fp32 tables).
    as_double = model.to(torch.float64)
    doubled = hidden(as_double, input_ids=input_ids)
    assert doubled.dtype == torch.float64
    assert_close(doubled.float(), edited, "float64 copy", tolerance=1e-4)


# --------------------------------------------------------------------------------------
# Truncated EMA with the cache on
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["nochunk", "chunk8"])
def test_truncated_ema_cached_equals_uncached(chunked: bool) -> None:
    kwargs = causal(truncation=5, use_chunking=chunked, chunk_size=8 if chunked else -1)
    model = build_ours(MODEL, kwargs)
    batch = make_batch(MODEL, kwargs, length=16)
    with torch.no_grad():
        cached = model(**batch.kwargs, use_cache=True)
        uncached = model(**batch.kwargs, use_cache=False)
    valid = batch.valid
    assert_close(cached.last_hidden_state[valid], uncached.last_hidden_state[valid], "cached vs uncached")


# --------------------------------------------------------------------------------------
# Padding is inert; tuples never hold None
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [tiny(bidirectional=True), causal(), causal(use_chunking=True, chunk_size=8, attention_activation="laplace")],
    ids=["bidir", "causal", "causal-laplace-chunk8"],
)
def test_padded_tokens_do_not_affect_real_ones(kwargs: dict[str, Any]) -> None:
    model = build_ours(MODEL, kwargs)
    batch = make_batch(MODEL, kwargs, length=16)
    other_ids = batch.kwargs["input_ids"].clone()
    other_ids[~batch.valid] = 7  # different tokens at the padded positions
    first = hidden(model, **batch.kwargs)
    second = hidden(model, **dict(batch.kwargs, input_ids=other_ids))
    assert_close(first[batch.valid], second[batch.valid], "real positions with other padding tokens")


def _flag_sets(head_id: str) -> list[dict[str, Any]]:
    sets: list[dict[str, Any]] = [{}, {"output_hidden_states": True}, {"output_attentions": True}]
    sets.append({"output_hidden_states": True, "output_attentions": True, "labels": True})
    if head_id in ("Model", "CausalLM"):
        sets.append({"use_cache": True, "output_hidden_states": True})
    return sets


@pytest.mark.parametrize("head_id", [head.id for head in HEADS])
@pytest.mark.parametrize("mode", ["causal", "bidir"])
def test_tuple_outputs_have_no_none(head_id: str, mode: str) -> None:
    head = HEADS_BY_ID[head_id]
    kwargs = causal() if mode == "causal" else tiny(bidirectional=True)
    model = build_ours(head, kwargs)
    batch = make_batch(head, kwargs, length=12)
    label_names = ("labels", "start_positions", "end_positions")
    for flags in _flag_sets(head_id):
        call = batch.without(*label_names) if not flags.get("labels") else dict(batch.kwargs)
        options = {k: v for k, v in flags.items() if k != "labels"}
        if "use_cache" not in options and head_id in ("Model", "CausalLM"):
            options["use_cache"] = False
        with torch.no_grad():
            as_tuple = model(**call, **options, return_dict=False)
            as_dict = model(**call, **options, return_dict=True)
        assert isinstance(as_tuple, tuple)
        assert all(item is not None for item in as_tuple), (flags, [type(i).__name__ for i in as_tuple])
        values = [v for v in as_dict.values() if v is not None]
        assert len(values) == len(as_tuple), (flags, list(as_dict.keys()))
        for name, a, b in zip(as_dict.keys(), as_tuple, values):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b), name
            elif isinstance(a, tuple):
                assert all(torch.equal(x, y) for x, y in zip(a, b)), name
        if flags.get("labels") and head_id != "Model":
            assert as_dict.loss is not None and as_tuple[0].dim() == 0


def test_config_without_token_type_key_has_no_token_type_embeddings() -> None:
    # A config.json without add_token_type_embeddings must load as the 4.40-4.57 code did.
    from mega_plugin.adapters.hf import MegaConfig, MegaModel

    config = MegaConfig.from_dict({key: value for key, value in TINY.items()})
    assert config.add_token_type_embeddings is False
    model = MegaModel(config)
    assert not any("token_type" in key for key in model.state_dict())
    randomize_(model, 0)
