"""The decoding step's keys and values grow in place, and every state keeps what it held.

Contents are checked against ``torch.cat`` of the same pieces (what the step did before), and the
whole decoding step against the core's own streaming path, which the HF and fairseq2 parity tests
check against transformers 4.57's MEGA.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from _support.backends import accelerated, reference_copy
from _support.configs import CAUSAL, tiny_config
from mega_plugin.backends.cpu_fast.growing_keys import MIN_CAPACITY, grown_views, reserve_position
from mega_plugin.core import MegaBackbone


def append_position(
    keys: Tensor | None, values: Tensor | None, key: Tensor, value: Tensor, *, capacity: int | None
) -> tuple[Tensor, Tensor]:
    """``keys`` / ``values`` with ``key`` (B, 1, Z) / ``value`` (B, 1, V) appended, as the decoding
    step does it: reserve the next position, write it, take the grown views."""
    length = 0 if keys is None else keys.shape[1]
    growth = reserve_position(
        keys, values, batch=key.shape[0], key_width=key.shape[2], value_width=value.shape[2],
        dtype=key.dtype, device=key.device, capacity=capacity,
    )
    growth.keys[:, length] = key[:, 0]
    growth.values[:, length] = value[:, 0]
    return grown_views(growth)


def pieces(batch: int, count: int, *, width: int = 3) -> list[tuple[Tensor, Tensor]]:
    return [(torch.randn(batch, 1, width), torch.randn(batch, 1, width + 2)) for _ in range(count)]


@pytest.mark.parametrize("capacity", [5, None])
def test_positions_are_written_in_place_and_equal_concatenation(capacity: int | None) -> None:
    steps = pieces(2, 5 if capacity else MIN_CAPACITY + 3)
    keys = values = None
    pointers = []
    for key, value in steps:
        keys, values = append_position(keys, values, key, value, capacity=capacity)
        pointers.append(keys.data_ptr())
    torch.testing.assert_close(keys, torch.cat([k for k, _ in steps], dim=1), rtol=0, atol=0)
    torch.testing.assert_close(values, torch.cat([v for _, v in steps], dim=1), rtol=0, atol=0)
    if capacity:
        assert len(set(pointers)) == 1  # one buffer for the whole chunk
    else:
        assert len(set(pointers)) == 2  # MIN_CAPACITY positions, then one doubling


def test_a_state_continued_twice_keeps_both_continuations() -> None:
    (k0, v0), (ka, va), (kb, vb) = pieces(2, 3)
    keys, values = append_position(None, None, k0, v0, capacity=8)
    branch_a = append_position(keys, values, ka, va, capacity=8)
    branch_b = append_position(keys, values, kb, vb, capacity=8)  # position 1 is taken: a copy
    assert branch_b[0].data_ptr() != branch_a[0].data_ptr()
    torch.testing.assert_close(branch_a[0], torch.cat([k0, ka], dim=1), rtol=0, atol=0)
    torch.testing.assert_close(branch_a[1], torch.cat([v0, va], dim=1), rtol=0, atol=0)
    torch.testing.assert_close(branch_b[0], torch.cat([k0, kb], dim=1), rtol=0, atol=0)
    torch.testing.assert_close(keys, k0, rtol=0, atol=0)  # the state itself still shows one position


def test_tensors_that_are_not_the_buffers_views_are_copied() -> None:
    (k0, v0), (k1, v1) = pieces(3, 2)
    keys, values = append_position(None, None, k0, v0, capacity=4)
    reordered = (keys[[2, 0, 1]], values[[2, 0, 1]])  # a beam reorder: new tensors
    grown = append_position(*reordered, k1, v1, capacity=4)
    torch.testing.assert_close(grown[0], torch.cat([reordered[0], k1], dim=1), rtol=0, atol=0)
    torch.testing.assert_close(keys, k0, rtol=0, atol=0)


@pytest.mark.parametrize("chunking", [dict(use_chunking=True, chunk_size=4), dict()], ids=["chunk4", "unchunked"])
def test_decoding_from_an_earlier_state_again_matches_the_core(chunking: dict) -> None:
    torch.manual_seed(0)
    reference = MegaBackbone(tiny_config(**CAUSAL, **chunking)).eval()
    model = accelerated(reference_copy(reference))
    tokens = torch.randint(3, 50, (2, 9))
    with torch.no_grad():
        states = {}
        for name, net in (("ours", model), ("core", reference)):
            result = net(tokens[:, :2], use_cache=True)
            state, kept = result.state, []
            for position in range(2, 7):
                result = net(tokens[:, position : position + 1], state=state, use_cache=True)
                state = result.state
                kept.append(state)
            states[name] = kept
        # continue from an earlier state (a rollback, a second branch): its positions were written
        for index in (1, 3, 1):
            ours = model(tokens[:, 8:9], state=states["ours"][index], use_cache=True)
            core = reference(tokens[:, 8:9], state=states["core"][index], use_cache=True)
            torch.testing.assert_close(ours.hidden, core.hidden, atol=1e-5, rtol=1e-5)
        last = model(tokens[:, 7:8], state=states["ours"][-1], use_cache=True)
        expected = reference(tokens[:, 7:8], state=states["core"][-1], use_cache=True)
        torch.testing.assert_close(last.hidden, expected.hidden, atol=1e-5, rtol=1e-5)
