"""``position_ids``: counting positions are accepted (MEGA has no absolute positions, so they
change nothing); positions that restart at 0 inside a row mark a packed (padding-free) batch,
whose documents run each on its own (core/packing.py, shared with the fairseq2 adapter's packed
layouts) and block-diagonal 4-D masks run as such documents; other 4-D masks are refused (4.57 and 5.x)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import TINY  # noqa: E402
from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM, MegaModel  # noqa: E402

pytestmark = pytest.mark.hf


def ids(batch: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(3, 60, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("offset", [0, 5], ids=["from0", "from5"])
def test_counting_positions_change_nothing(offset: int) -> None:
    torch.manual_seed(0)
    model = MegaModel(MegaConfig(**TINY)).eval()
    inputs = ids()
    positions = (torch.arange(inputs.shape[1]) + offset).expand_as(inputs)
    with torch.no_grad():
        assert torch.equal(model(inputs, position_ids=positions)[0], model(inputs)[0])


def test_left_padding_may_carry_any_position() -> None:
    torch.manual_seed(0)
    model = MegaModel(MegaConfig(**TINY)).eval()
    inputs = ids()
    mask = torch.ones_like(inputs)
    mask[0, :2] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [0, 0, 0, 1, 2, 3] for the padded row
    positions[0, :2] = 1
    with torch.no_grad():
        assert torch.equal(
            model(inputs, attention_mask=mask, position_ids=positions)[0], model(inputs, attention_mask=mask)[0]
        )


PACKED_CASES = {
    "bidirectional": dict(),
    "bidirectional-chunk2": dict(use_chunking=True, chunk_size=2),
    "causal": dict(is_decoder=True, bidirectional=False),
    "causal-chunk2": dict(is_decoder=True, bidirectional=False, use_chunking=True, chunk_size=2),
}


@pytest.mark.parametrize("case", sorted(PACKED_CASES))
def test_a_packed_batch_equals_each_document_alone(case: str) -> None:
    """Two rows of packed documents (3+2+2 and 4+3 tokens): every document's states equal
    running it alone, so nothing crosses a boundary (the EMA and the attention would)."""
    torch.manual_seed(0)
    model = MegaModel(MegaConfig(**TINY, **PACKED_CASES[case])).eval()
    inputs = ids(batch=2, length=7)
    lengths = [[3, 2, 2], [4, 3]]
    positions = torch.tensor([[p for n in row for p in range(n)] for row in lengths])
    with torch.no_grad():
        packed = model(inputs, position_ids=positions, output_hidden_states=True)
        for row, row_lengths in enumerate(lengths):
            start = 0
            for n in row_lengths:
                alone = model(inputs[row : row + 1, start : start + n], output_hidden_states=True)
                torch.testing.assert_close(
                    packed.last_hidden_state[row, start : start + n], alone.last_hidden_state[0], atol=1e-5, rtol=0
                )
                for ours, single in zip(packed.hidden_states, alone.hidden_states):
                    torch.testing.assert_close(ours[row, start : start + n], single[0], atol=1e-5, rtol=0)
                start += n
        # and the documents do interact when the positions are left out
        assert not torch.allclose(model(inputs).last_hidden_state, packed.last_hidden_state, atol=1e-4)


def test_a_packed_causal_lm_loss_trains() -> None:
    torch.manual_seed(0)
    model = MegaForCausalLM(MegaConfig(**TINY, is_decoder=True, bidirectional=False))
    inputs = ids(batch=1, length=7)
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1]])
    output = model(inputs, position_ids=positions, labels=inputs)
    output.loss.backward()
    assert torch.isfinite(output.loss)


@pytest.mark.parametrize("what", ["padding", "attentions"])
def test_a_packed_batch_refuses_what_cannot_go_with_it(what: str) -> None:
    model = MegaModel(MegaConfig(**TINY)).eval()
    inputs = ids(batch=1, length=5)
    positions = torch.tensor([[0, 1, 2, 0, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 0]]) if what == "padding" else None
    with pytest.raises(ValueError, match="a packed batch"):
        model(inputs, position_ids=positions, attention_mask=mask, output_attentions=what == "attentions")


def test_positions_that_jump_are_refused() -> None:
    model = MegaModel(MegaConfig(**TINY)).eval()
    with pytest.raises(ValueError, match="position_ids jump inside a row"):
        model(ids(batch=1, length=4), position_ids=torch.tensor([[0, 1, 5, 6]]))


def block_diagonal(lengths: list[list[int]], *, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) bool: each document sees itself only (causally for a decoder)."""
    rows = []
    for row in lengths:
        document = torch.cat([torch.full((n,), i) for i, n in enumerate(row)])
        allowed = document[:, None] == document[None, :]
        if causal:
            allowed &= torch.ones_like(allowed).tril()
        rows.append(allowed)
    return torch.stack(rows)[:, None]


@pytest.mark.parametrize("form", ["bool", "additive", "binary-float"])
@pytest.mark.parametrize("case", sorted(PACKED_CASES))
def test_a_block_diagonal_4d_mask_equals_each_document_alone(case: str, form: str) -> None:
    torch.manual_seed(0)
    config = MegaConfig(**TINY, **PACKED_CASES[case])
    model = (MegaForCausalLM if config.is_decoder else MegaModel)(config).eval()
    inputs = ids(batch=2, length=7)
    lengths = [[3, 2, 2], [4, 3]]
    allowed = block_diagonal(lengths, causal=config.is_decoder)
    mask = {
        "bool": allowed,
        "additive": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min),
        "binary-float": allowed.float(),
    }[form]
    with torch.no_grad():
        packed = model(inputs, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        for row, row_lengths in enumerate(lengths):
            start = 0
            for n in row_lengths:
                alone = model(inputs[row : row + 1, start : start + n], output_hidden_states=True).hidden_states[-1]
                torch.testing.assert_close(packed[row, start : start + n], alone[0], atol=1e-5, rtol=0)
                start += n


@pytest.mark.parametrize(
    "bad, message",
    [
        ("shape", "must have shape \\(batch, 1, 6, 6\\)"),
        ("sliding-window", "must be block-diagonal"),
        ("padding", "must be block-diagonal"),
        ("not-causal", "must be block-diagonal"),
    ],
)
def test_other_4d_masks_are_refused_by_name(bad: str, message: str) -> None:
    model = MegaForCausalLM(MegaConfig(**TINY, is_decoder=True, bidirectional=False)).eval()
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    mask = {
        "shape": torch.ones(2, 1, 1, 6, dtype=torch.bool),
        "sliding-window": (causal & ~torch.ones(6, 6, dtype=torch.bool).tril(-3)).expand(2, 1, 6, 6),
        "padding": (causal & torch.tensor([True] * 5 + [False])).expand(2, 1, 6, 6),
        "not-causal": torch.ones(2, 1, 6, 6, dtype=torch.bool),
    }[bad]
    with pytest.raises(ValueError, match=message):
        model(ids(), attention_mask=mask)
