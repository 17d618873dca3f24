"""The row-blocked whole-sequence forward against the unblocked one: outputs and gradients.

``MovingAverageGatedAttention`` and ``NormalizedFeedForward`` run long inputs block by block
(``block_rows``); ``block_rows=None`` runs every op over the whole tensor (the general path,
which the HF/fairseq2 parity tests check against transformers 4.57's MEGA). Tiny blocks here
force many blocks, blocks that span sequences, and blocks that end in a short last chunk.
"""

from __future__ import annotations

from typing import Final

import pytest
import torch
from torch import Tensor

from mega_plugin.core import gated_attention
from mega_plugin.core.kernels.row_blocks import plan_row_blocks
from mega_plugin.core.stack import MegaBackbone

from .helpers import tiny_config

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




def set_block_rows(model: torch.nn.Module, rows: int | None) -> int:
    """Set ``block_rows`` on every module that has it; returns how many were set."""
    count = 0
    for module in model.modules():
        if hasattr(module, "block_rows"):
            module.block_rows = rows
            count += 1
    return count


def outputs_and_gradients(model: MegaBackbone, tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
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
        monkeypatch.setattr(gated_attention, "SEQUENCE_GROUP_ROWS", length)
    torch.manual_seed(0)
    model = MegaBackbone(tiny_config(**settings)).train(training)
    tokens = torch.randint(3, 50, (3, length))
    mask = None
    if with_padding:
        mask = torch.ones(3, length, dtype=torch.long)
        mask[1, length // 2 :] = 0  # right padding
        mask[2, : max(1, length // 3)] = 0  # left padding
    assert set_block_rows(model, None) == 4  # two layers: the gated attention and the NFFN
    expected, expected_grads = outputs_and_gradients(model, tokens, mask)
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
    model = MegaBackbone(tiny_config(dropout_prob=0.3, use_feature_dropout=True, use_chunking=True, chunk_size=8)).train()
    tokens = torch.randint(3, 50, (2, 32))
    set_block_rows(model, None)
    torch.manual_seed(1)
    expected = model(tokens).hidden
    set_block_rows(model, 8)
    torch.manual_seed(1)
    torch.testing.assert_close(model(tokens).hidden, expected, atol=0.0, rtol=0.0)


@pytest.mark.parametrize(
    "batch,length,chunk,rows",
    [(3, 32, 8, 20), (2, 30, 8, 16), (4, 5, 8, 8), (2, 17, None, 8), (3, 9, None, 40), (1, 1, 4, 1024), (2, 13, 1, 5)],
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
        first = int(view.reshape(-1)[0])
        assert first % length % frame == 0
    assert torch.equal(seen, torch.ones(batch * length))


def test_plan_of_nothing_is_empty() -> None:
    assert plan_row_blocks(0, 8, chunk=4) == [] and plan_row_blocks(2, 0, chunk=None) == []


def test_channel_major_blocks_hold_the_same_rows() -> None:
    """``split_rows`` of a channel-major (B, L, F) tensor gives the blocks of its contiguous copy."""
    from mega_plugin.core.kernels.row_blocks import is_channel_major, split_rows, to_channel_major

    x = torch.randn(3, 16, 5)
    channel_major = to_channel_major(x)
    assert is_channel_major(channel_major) and not is_channel_major(x)
    blocks = plan_row_blocks(3, 16, chunk=4, target_rows=8)
    for got, expected in zip(split_rows(channel_major, blocks), split_rows(x, blocks), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("case", ["chunk8-L32", "chunk8-L30-short-last-chunk", "unchunked-L20", "postnorm-layernorm"])
def test_overwrite_input_gives_the_same_output(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``overwrite_input=True`` (the caller hands x over) changes where the result goes, never its value."""
    settings = dict(CASES[case])
    length = settings.pop("length")
    monkeypatch.setattr(gated_attention, "SEQUENCE_GROUP_ROWS", length)  # several sequence groups
    torch.manual_seed(0)
    model = MegaBackbone(tiny_config(**settings)).eval()
    set_block_rows(model, 8)
    layer = model.layers[0]
    x = torch.randn(3, length, 16)
    mask = torch.ones(3, length, dtype=torch.bool)
    mask[1, length // 2 :] = False
    with torch.no_grad():
        for module, call in (
            (layer.mega_layer, lambda inputs, **kw: layer.mega_layer(inputs, key_mask=mask, **kw).hidden),
            (layer.nffn, lambda inputs, **kw: layer.nffn(inputs, **kw)),
        ):
            expected = call(x.clone())
            given = x.clone()
            got = call(given, overwrite_input=True)
            torch.testing.assert_close(got, expected, atol=0.0, rtol=0.0)
            if module.prenorm:
                assert got.data_ptr() == given.data_ptr()  # written into the handed-over input
    leaf = x.clone().requires_grad_(True)  # calls that record gradients ignore it
    layer.nffn(leaf, overwrite_input=True).sum().backward()
    torch.testing.assert_close(leaf.detach(), x, atol=0.0, rtol=0.0)
