"""The row-blocked layers of ``cpu_fast`` against the core's whole-tensor reference: outputs and gradients.

``BlockedGatedAttention`` and ``BlockedFeedForward`` (what ``accelerate`` swaps in) run inputs
block by block (``block_rows`` rows); the core's ``MovingAverageGatedAttention`` and
``NormalizedFeedForward`` run every op over the whole tensor (the reference path, which the
HF/fairseq2 parity tests check against transformers 4.57's MEGA). Tiny blocks here force many
blocks, blocks that span sequences, and blocks that end in a short last chunk.
"""

from __future__ import annotations

from typing import Final

import pytest
import torch
from torch import Tensor

from _support.backends import accelerated, blocked_modules, record_hand_overs, reference_copy, set_block_rows
from _support.configs import tiny_config
from mega_plugin.backends.cpu_fast import layer as blocked_layer
from mega_plugin.backends.cpu_fast.ownership import HandOverStack
from mega_plugin.backends.cpu_fast.row_blocks import is_channel_major, plan_row_blocks, split_rows, to_channel_major
from mega_plugin.core import MegaBackbone

TOLERANCE: Final = dict(atol=2e-5, rtol=1e-4)
CASES: Final = {
    "chunk8-L32": dict(use_chunking=True, chunk_size=8, length=32),
    "chunk8-L30-short-last-chunk": dict(use_chunking=True, chunk_size=8, length=30),
    "chunk8-L6-one-frame": dict(use_chunking=True, chunk_size=8, length=6),
    "unchunked-L20": dict(length=20),
    "causal-chunk8-L27": dict(use_chunking=True, chunk_size=8, length=27, is_decoder=True, bidirectional=False),
    "postnorm-layernorm": dict(
        use_chunking=True, chunk_size=8, length=24, normalize_before_mega=False, normalize_before_ffn=False,
        normalization_type="layernorm",
    ),
    # the no-grad blocks apply silu/relu in place and gelu out of place
    "relu-activation": dict(use_chunking=True, chunk_size=8, length=24, activation="relu"),
    "gelu-activation": dict(length=20, activation="gelu"),
    "linear-activation": dict(use_chunking=True, chunk_size=8, length=30, activation="linear"),
    # batch statistics in training: the layer must not cut the batch into sequence groups
    "prenorm-batchnorm": dict(use_chunking=True, chunk_size=8, length=24, normalization_type="batchnorm"),
    "simple-bias-laplace": dict(
        use_chunking=True, chunk_size=8, length=24, relative_positional_bias="simple", attention_activation="laplace"
    ),
}



def outputs_and_gradients(
    model: torch.nn.Module, tokens: Tensor, mask: Tensor | None
) -> tuple[Tensor, dict[str, Tensor]]:
    model.zero_grad()
    hidden = model(tokens, attention_mask=mask).hidden
    (hidden.square().mean() + hidden[:, :1].sum()).backward()
    return hidden.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("one_sequence_per_group", [False, True], ids=["all-sequences", "one-sequence-groups"])
@pytest.mark.parametrize("with_padding", [False, True], ids=["no-padding", "padding"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_blocked_forward_matches_unblocked(
    case: str, training: bool, with_padding: bool, one_sequence_per_group: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dict(CASES[case])
    length = settings.pop("length")
    if one_sequence_per_group:  # the norm and the EMA then run sequence by sequence
        monkeypatch.setattr(blocked_layer, "SEQUENCE_GROUP_ROWS", length)
    torch.manual_seed(0)
    reference = MegaBackbone(tiny_config(**settings)).train(training)
    model = accelerated(reference_copy(reference))
    tokens = torch.randint(3, 50, (3, length))
    mask = None
    if with_padding:
        mask = torch.ones(3, length, dtype=torch.long)
        mask[1, length // 2 :] = 0  # right padding
        mask[2, : max(1, length // 3)] = 0  # left padding
    assert len(blocked_modules(model)) == 4  # two layers: the gated attention and the NFFN
    expected, expected_grads = outputs_and_gradients(reference, tokens, mask)
    for rows in (1, 8, 20):
        set_block_rows(model, rows)
        got, got_grads = outputs_and_gradients(model, tokens, mask)
        torch.testing.assert_close(got, expected, **TOLERANCE)
        assert got_grads.keys() == expected_grads.keys()
        for name, grad in expected_grads.items():
            torch.testing.assert_close(got_grads[name], grad, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")
        with torch.no_grad():  # the no-grad path writes blocks into a preallocated output
            torch.testing.assert_close(model(tokens, attention_mask=mask).hidden, expected, **TOLERANCE)


def test_feature_dropout_in_training_is_not_blocked() -> None:
    """Feature dropout draws one mask per sequence: blocking would change the draws, so it is not used."""
    reference = MegaBackbone(tiny_config(dropout_prob=0.3, use_feature_dropout=True, use_chunking=True, chunk_size=8)).train()
    model = accelerated(reference_copy(reference), block_rows=8)
    tokens = torch.randint(3, 50, (2, 32))
    torch.manual_seed(1)
    expected = reference(tokens).hidden
    torch.manual_seed(1)
    torch.testing.assert_close(model(tokens).hidden, expected, atol=0.0, rtol=0.0)


@pytest.mark.parametrize(
    "batch,length,chunk,rows",
    [
        (3, 32, 8, 20),
        (2, 30, 8, 16),
        (2, 30, 8, 8),
        (1, 30, 8, 1),
        (4, 5, 8, 8),
        (2, 17, None, 8),
        (3, 9, None, 40),
        (1, 1, 4, 1024),
        (2, 13, 1, 5),
    ],
)
def test_plan_covers_every_token_once_in_whole_frames(batch: int, length: int, chunk: int | None, rows: int) -> None:
    positions = torch.arange(batch * length, dtype=torch.float32).view(batch, length, 1)
    seen = torch.zeros(batch * length)
    frame = length if chunk is None or length <= chunk else chunk
    for block in plan_row_blocks(batch, length, chunk=chunk, target_rows=rows):
        view = block.take(positions)
        seen[view.reshape(-1).long()] += 1
        if block.sequence is None:
            assert view.shape[1] == frame  # (frames, frame, 1): whole frames only
        else:
            assert view.shape[0] == 1 and block.start % frame == 0  # starts on a frame boundary
            if block.stop == length and length > frame:
                # the short last chunk shares its block (padded to a whole chunk, as over the whole tensor)
                assert block.stop - block.start > frame, block
        first = int(view.reshape(-1)[0])
        assert first % length % frame == 0
    assert torch.equal(seen, torch.ones(batch * length))


def test_plan_of_nothing_is_empty() -> None:
    assert plan_row_blocks(0, 8, chunk=4) == [] and plan_row_blocks(2, 0, chunk=None) == []


def test_channel_major_blocks_hold_the_same_rows() -> None:
    """``split_rows`` of a channel-major (B, L, F) tensor gives the blocks of its contiguous copy."""
    x = torch.randn(3, 16, 5)
    channel_major = to_channel_major(x)
    assert is_channel_major(channel_major) and not is_channel_major(x)
    blocks = plan_row_blocks(3, 16, chunk=4, target_rows=8)
    for got, expected in zip(split_rows(channel_major, blocks), split_rows(x, blocks), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("case", ["chunk8-L32", "chunk8-L30-short-last-chunk", "unchunked-L20", "postnorm-layernorm"])
def test_the_hand_over_changes_where_results_go_never_their_values(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside one call of the accelerated stack (``HandOverStack``) a no-grad pre-norm sub-layer writes its
    result into the tensor the previous sub-layer handed it; the values are those of the same blocked
    layers without the hand-over (hidden states kept), bit for bit."""
    settings = dict(CASES[case])
    length = settings.pop("length")
    monkeypatch.setattr(blocked_layer, "SEQUENCE_GROUP_ROWS", length)  # several sequence groups
    torch.manual_seed(0)
    model = accelerated(MegaBackbone(tiny_config(**settings)).eval(), block_rows=8)
    stack = model.layers
    assert isinstance(stack, HandOverStack)
    x = torch.randn(3, length, 16)
    mask = torch.ones(3, length, dtype=torch.bool)
    mask[1, length // 2 :] = False
    hand_overs = record_hand_overs(monkeypatch)
    with torch.no_grad():
        expected = stack(x.clone(), key_mask=mask, output_hidden_states=True).hidden  # nothing handed over
        assert not any(call.in_place for call in hand_overs)
        hand_overs.clear()
        given = x.clone()
        got = stack(given, key_mask=mask).hidden
    torch.testing.assert_close(got, expected, atol=0.0, rtol=0.0)
    torch.testing.assert_close(given, x, atol=0.0, rtol=0.0)  # the caller's tensor is never handed over
    assert [call.kind for call in hand_overs] == ["attention", "ffn"] * len(stack)
    first, *handed = hand_overs
    assert not first.in_place
    assert [call.in_place for call in handed] == [call.prenorm for call in handed]  # written into the handed-over input
    assert any(call.in_place for call in handed) == (case != "postnorm-layernorm")
    hand_overs.clear()
    leaf = x.clone().requires_grad_(True)  # calls that record gradients never write in place
    stack(leaf, key_mask=mask).hidden.sum().backward()
    assert hand_overs and not any(call.in_place for call in hand_overs)
    torch.testing.assert_close(leaf.detach(), x, atol=0.0, rtol=0.0)
