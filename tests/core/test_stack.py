"""The MEGA stack: padding, causality, streaming (cached == full forward), left padding,
gradient checkpointing, and the kernel a model's config names.

Models are tiny (:mod:`_support.configs`, with EMA 3) with dropout off and a large init range
(0.3) so that attention weights, gates and biases are far from uniform and a wrong mask or a
wrong cache changes the outputs well above the tolerances. The kernel registry itself is
tested in ``tests/core/ops/test_registry.py``.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import pytest
import torch
from torch import Tensor

import mega_plugin.core.stack as stack_module
from _support.configs import TINY, tiny_config
from _support.ema import float64_ema
from _support.numerics import max_diff
from mega_plugin.core import MegaBackbone, MegaCoreConfig, MegaState
from mega_plugin.core.ops import KernelSpec, register_kernel, unregister_kernel

VOCAB, PAD = TINY["vocab_size"], TINY["pad_token_id"]
CHUNK = 4
TOLERANCE = 1e-5
ACTIVATIONS = ("softmax", "laplace", "relu2")
CASES = [
    pytest.param(activation, chunk, bias, id=f"{activation}-{'chunk4' if chunk else 'nochunk'}-{bias}")
    for activation, chunk, bias in itertools.product(ACTIVATIONS, [CHUNK, None], ["rotary", "simple"])
]


def make_config(
    attention: str = "softmax", chunk: int | None = CHUNK, bias: str = "rotary", *, causal: bool = True, **overrides: Any
) -> MegaCoreConfig:
    values: dict[str, Any] = dict(
        ema_projection_size=3,
        normalization_type="layernorm",
        attention_activation=attention,
        relative_positional_bias=bias,
        use_chunking=chunk is not None,
        chunk_size=chunk if chunk is not None else -1,
        bidirectional=not causal,
        is_decoder=causal,
        initializer_range=0.3,
    )
    return tiny_config(**{**values, **overrides})


def make_model(*args: Any, **kwargs: Any) -> MegaBackbone:
    model = MegaBackbone(make_config(*args, **kwargs)).eval()
    with torch.no_grad():  # simple biases start near zero; make them matter
        for name, parameter in model.named_parameters():
            if name.endswith("rel_pos_bias.rel_pos_bias"):
                parameter.normal_(0.0, 1.0)
    return model


def token_ids(batch: int, length: int, *, seed: int = 0) -> Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_same(actual: Tensor, expected: Tensor, context: object = "") -> None:
    """Max abs diff <= 1e-5 per unit of the largest activation (fp32 roundoff grows with it)."""
    assert actual.shape == expected.shape, context
    scale = max(1.0, expected.abs().max().item())
    assert max_diff(actual, expected) <= TOLERANCE * scale, (context, max_diff(actual, expected), scale)


def stream(model: MegaBackbone, ids: Tensor, pieces: list[int], mask: Tensor | None = None) -> Iterator[tuple[Tensor, MegaState]]:
    """Feed ``ids`` in ``pieces`` through the cache; yield (hidden of the piece, state after it)."""
    state, start = None, 0
    for size in pieces:
        end = start + size
        result = model(
            ids[:, start:end], attention_mask=None if mask is None else mask[:, :end], state=state, use_cache=True
        )
        state = result.state
        yield result.hidden, state
        start = end


# --- (a) lengths that are not a multiple of the chunk -------------------------------------


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("activation,chunk,bias", CASES)
def test_any_length_equals_explicit_right_padding(activation: str, chunk: int | None, bias: str, causal: bool) -> None:
    model = make_model(activation, chunk, bias, causal=causal)
    for length, extra in [(3, 1), (10, 2), (10, 7), (13, 3)]:
        ids = token_ids(2, length, seed=length)
        padded = torch.cat([ids, torch.full((2, extra), PAD)], dim=1)
        mask = torch.cat([torch.ones(2, length), torch.zeros(2, extra)], dim=1).long()
        with torch.no_grad():
            plain = model(ids).hidden
            explicit = model(padded, attention_mask=mask).hidden
        assert plain.shape == (2, length, 16)
        assert_same(explicit[:, :length], plain, (length, extra))


# --- (b) causality --------------------------------------------------------------------------


@pytest.mark.parametrize("activation,chunk,bias", CASES)
def test_prefix_does_not_see_the_future(activation: str, chunk: int | None, bias: str) -> None:
    model = make_model(activation, chunk, bias)
    ids = token_ids(2, 14)
    with torch.no_grad():
        full = model(ids).hidden
        for t in (1, 3, 4, 5, 9, 13):
            assert_same(model(ids[:, :t]).hidden, full[:, :t], t)
            changed = ids.clone()
            changed[:, t:] = token_ids(2, 14 - t, seed=t + 100)
            assert_same(model(changed).hidden[:, :t], full[:, :t], t)


# --- (c) streaming ------------------------------------------------------------------------------

PIECES = {
    "3-1-1-5-1-2-6": [3, 1, 1, 5, 1, 2, 6],
    "ones": [1] * 19,
    "4-4-4-7": [4, 4, 4, 7],
    "5-14": [5, 14],
    "whole": [19],
}


@pytest.mark.parametrize("pieces", list(PIECES.values()), ids=list(PIECES))
@pytest.mark.parametrize("activation,chunk,bias", CASES)
def test_streaming_equals_full_forward(activation: str, chunk: int | None, bias: str, pieces: list[int]) -> None:
    model = make_model(activation, chunk, bias)
    ids = token_ids(2, sum(pieces))
    with torch.no_grad():
        full = model(ids).hidden
        outputs, position = [], 0
        for hidden, state in stream(model, ids, pieces):
            outputs.append(hidden)
            position += hidden.shape[1]
            assert state.position == position
            for layer in state.layers:
                assert layer.ema is not None and layer.ema.shape == (2, 16, 3)
                expected_cached = position % chunk if chunk else position
                assert layer.cached_length == expected_cached
                assert chunk is None or layer.cached_length < chunk
    assert_same(torch.cat(outputs, dim=1), full)


@pytest.mark.parametrize("truncation", [None, 3], ids=["full", "trunc3"])
@pytest.mark.parametrize("activation,chunk,bias", CASES)
def test_streaming_is_exact_in_float64(
    activation: str, chunk: int | None, bias: str, truncation: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a float64 EMA kernel, cached decoding equals the full forward to roundoff (1e-10)."""
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_EMA", "test_float64")
    register_kernel(KernelSpec(name="test_float64", op="ema", fn=float64_ema), replace=True)
    try:
        model = make_model(activation, chunk, bias, truncation=truncation).double()
        ids = token_ids(2, 15)
        mask = torch.ones(2, 15, dtype=torch.long)
        mask[1, :CHUNK] = 0
        with torch.no_grad():
            full = model(ids, attention_mask=mask).hidden
            for pieces in ([3, 1, 1, 5, 1, 4], [1] * 15):
                streamed = torch.cat([hidden for hidden, _ in stream(model, ids, pieces, mask)], dim=1)
                assert max_diff(streamed[mask.bool()], full[mask.bool()]) <= 1e-10, pieces
    finally:
        unregister_kernel("ema", "test_float64")


@pytest.mark.parametrize(
    "overrides",
    [
        dict(truncation=3),
        dict(truncation=1, chunk_size=5),
        dict(normalization_type="scalenorm", normalize_before_mega=False, normalize_before_ffn=False),
        dict(normalization_type="batchnorm"),
        dict(normalization_type="rmsnorm", activation="gelu", use_normalized_ffn=False),
        dict(use_chunking=False, chunk_size=-1, truncation=6, relative_positional_bias="simple"),
    ],
    ids=["trunc3", "trunc1-chunk5", "scalenorm-postnorm", "batchnorm", "rmsnorm-gelu-noffn", "nochunk-trunc6-simple"],
)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_streaming_variants(activation: str, overrides: dict[str, Any]) -> None:
    model = make_model(activation, **overrides)
    ids = token_ids(2, 17)
    with torch.no_grad():
        full = model(ids).hidden
        for pieces in ([3, 1, 1, 5, 1, 6], [1] * 17):
            streamed = torch.cat([hidden for hidden, _ in stream(model, ids, pieces)], dim=1)
            assert_same(streamed, full, pieces)


@pytest.mark.parametrize("chunk", [CHUNK, None], ids=["chunk4", "nochunk"])
def test_state_reorder_permutes_the_batch(chunk: int | None) -> None:
    model = make_model("laplace", chunk)
    ids = token_ids(3, 13)
    order = torch.tensor([2, 0, 2])  # a permutation with a repeat, as beam search does
    with torch.no_grad():
        expected = model(ids[order]).hidden
        first = model(ids[:, :6], use_cache=True)
        state = first.state
        before = [layer.keys.clone() for layer in state.layers]
        state.reorder(order)
        for old, layer in zip(before, state.layers):
            assert torch.equal(layer.keys, old[order])
        rest = model(ids[order, 6:], state=state, use_cache=True).hidden
    assert_same(first.hidden[order], expected[:, :6])
    assert_same(rest, expected[:, 6:])


@pytest.mark.parametrize("chunk", [CHUNK, None], ids=["chunk4", "nochunk"])
def test_state_size(chunk: int | None) -> None:
    model = make_model("softmax", chunk)
    ids = token_ids(1, 6 * CHUNK)
    with torch.no_grad():
        sizes = [state.size_bytes() for _, state in stream(model, ids, [1] * ids.shape[1])]
    if chunk:
        # Periodic with the chunk: the state never grows with context.
        assert all(sizes[t] == sizes[t + chunk] for t in range(len(sizes) - chunk))
        assert max(sizes) == max(sizes[:chunk])
    else:
        assert all(later > earlier for earlier, later in zip(sizes, sizes[1:]))


def test_streaming_refuses_bidirectional() -> None:
    model = make_model(causal=False)
    with pytest.raises(ValueError, match="is_decoder=True and bidirectional=False"):
        model(token_ids(1, 3), use_cache=True)


# --- (d) left padding -----------------------------------------------------------------------------
#
# Chunks are cut at absolute positions of the padded input, as in the reference (and as the
# original MEGA does). Left padding by k tokens therefore keeps every real token in the same
# chunk, at the same offset, only when k is a multiple of chunk_size; otherwise the chunk
# boundaries move relative to the text and the attention pattern legitimately changes. With
# chunking, batches must be left-padded to multiples of chunk_size (pad_to_multiple_of) to get
# the unpadded result; without chunking any amount of left padding is exact.


def left_padded_batch(chunk: int | None) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Two sequences (lengths 11 and 11 - pad) left-padded to one batch; pad = chunk or 3."""
    pad = chunk if chunk else 3
    rows = [token_ids(1, 11, seed=1)[0], token_ids(1, 11 - pad, seed=2)[0]]
    ids = torch.stack([rows[0], torch.cat([torch.full((pad,), PAD), rows[1]])])
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :pad] = 0
    return ids, mask, rows


@pytest.mark.parametrize("activation,chunk,bias", CASES)
def test_left_padding_equals_unpadded_run(activation: str, chunk: int | None, bias: str) -> None:
    model = make_model(activation, chunk, bias)
    ids, mask, rows = left_padded_batch(chunk)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).hidden
        for index, row in enumerate(rows):
            alone = model(row.unsqueeze(0)).hidden[0]
            assert_same(padded[index, -row.numel() :], alone, index)
        # Generation-style: the padded batch streamed token by token after a prompt.
        streamed = torch.cat([hidden for hidden, _ in stream(model, ids, [5, 1, 1, 1, 3], mask)], dim=1)
    real = mask.bool()
    assert_same(streamed[real], padded[real])


# --- (e) gradient checkpointing ---------------------------------------------------------------------


@pytest.mark.parametrize("cross_attention", [False, True], ids=["self", "cross"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("chunk", [CHUNK, None], ids=["chunk4", "nochunk"])
def test_gradient_checkpointing_same_gradients(chunk: int | None, reentrant: bool, cross_attention: bool) -> None:
    torch.manual_seed(0)
    config = tiny_config(
        use_chunking=chunk is not None, chunk_size=chunk or -1, is_decoder=cross_attention,
        bidirectional=not cross_attention, add_cross_attention=cross_attention,
    )
    model = MegaBackbone(config).train()
    ids = token_ids(2, 10)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 8:] = 0
    weights = torch.randn(2, 10, config.hidden_size)
    encoder = torch.randn(2, 5, config.hidden_size, requires_grad=True) if cross_attention else None

    def gradients() -> dict[str, Tensor]:
        model.zero_grad()
        if encoder is not None:
            encoder.grad = None
        extra = {} if encoder is None else {"encoder_hidden": encoder}
        (model(ids, attention_mask=mask, **extra).hidden * weights).sum().backward()
        found = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        if encoder is not None:
            found["encoder_hidden_states"] = encoder.grad.clone()  # reaches the encoder in both modes
        return found

    plain = gradients()
    runs: list[bool] = []

    def counting_checkpoint(run_block: Any, *inputs: Any) -> Any:
        def recorded(*args: Any) -> Any:
            runs.append(torch.is_grad_enabled())
            return run_block(*args)

        return torch.utils.checkpoint.checkpoint(recorded, *inputs, use_reentrant=reentrant)

    model.layers.set_checkpointing(function=counting_checkpoint)
    checkpointed = gradients()
    assert len(runs) == 2 * len(model.layers), runs  # each block in the forward and again in the backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    model.layers.set_checkpointing(False)
    runs.clear()
    gradients()
    assert not runs
