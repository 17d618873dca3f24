"""``core.tracing.capturing_graph``: True under every graph capture torch offers, False in eager;
the value checks it guards raise in eager and step aside in a captured graph.

Compiles use ``backend="eager"`` (dynamo's capture without inductor's code generation): what is
tested is the capture, and it keeps each test well under a second.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mega_plugin.core.embeddings import check_ids
from mega_plugin.core.masks import padding_to_key_mask
from mega_plugin.core.tracing import capturing_graph


def flag_as_tensor(x: Tensor) -> Tensor:
    # (N,) -> (N,): x + 1 while a graph is captured, x in eager
    return x + 1 if capturing_graph() else x


class FlagModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return flag_as_tensor(x)


def test_false_in_eager() -> None:
    assert not capturing_graph()
    assert torch.equal(flag_as_tensor(torch.zeros(2)), torch.zeros(2))


def test_true_under_torch_compile_fullgraph() -> None:
    torch._dynamo.reset()
    compiled = torch.compile(flag_as_tensor, backend="eager", fullgraph=True)
    assert torch.equal(compiled(torch.zeros(2)), torch.ones(2))


@pytest.mark.parametrize("strict", [False, True], ids=["nonstrict", "strict"])
def test_true_under_torch_export(strict: bool) -> None:
    program = torch.export.export(FlagModule(), (torch.zeros(2),), strict=strict)
    assert torch.equal(program.module()(torch.zeros(2)), torch.ones(2))


def test_true_under_jit_trace_and_fx() -> None:
    traced = torch.jit.trace(FlagModule(), (torch.zeros(2),))
    assert torch.equal(traced(torch.zeros(2)), torch.ones(2))
    symbolic = torch.fx.symbolic_trace(FlagModule())
    assert torch.equal(symbolic(torch.zeros(2)), torch.ones(2))


def test_id_range_check_raises_in_eager_and_steps_aside_in_a_graph() -> None:
    ids = torch.tensor([[3, 70]])
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=60\); found values in \[3, 70\]"):
        check_ids(ids, "input_ids", 60, "vocab_size")

    def checked(values: Tensor) -> Tensor:
        return check_ids(values, "input_ids", 60, "vocab_size") * 2

    torch._dynamo.reset()
    compiled = torch.compile(checked, backend="eager", fullgraph=True)  # fullgraph: no .item() break
    assert torch.equal(compiled(ids), ids * 2)
    # dtype checks stay (a graph is specialised on dtypes); fullgraph reports the raise as
    # dynamo's Unsupported carrying our message, a plain compile re-raises the TypeError itself
    with pytest.raises((TypeError, torch._dynamo.exc.Unsupported), match="input_ids must be an integer tensor"):
        compiled(ids.float())


def test_all_real_mask_is_none_in_eager_and_kept_in_a_graph() -> None:
    mask = torch.ones(2, 5, dtype=torch.long)
    assert padding_to_key_mask(mask, batch=2, length=5, position=0) is None

    def key_mask(values: Tensor) -> Tensor:
        found = padding_to_key_mask(values, batch=2, length=5, position=0)
        assert found is not None  # a graph keeps the mask: it cannot look at the values
        return found

    torch._dynamo.reset()
    compiled = torch.compile(key_mask, backend="eager", fullgraph=True)
    assert torch.equal(compiled(mask), mask.bool())
