"""The kernels that cut frames into query slices (``query_blocks``, ``onednn``) against the reference.

Query slices must reproduce the whole-frame reference up to rounding (compared with float64
arithmetic), outputs, weights and gradients, for every activation, causal frames with a query
offset, padding masks (fully padded frames included), ``need_weights``, and slices that do not
divide the queries evenly. Then ``query_blocks``'s slice sizes, dispatch and refusals.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Final

import pytest
import torch
from torch import Tensor

from _support.attention import ATTENTION_CASE_FIELDS, ATTENTION_CASES, attention_inputs, attention_options
from _support.backends import requires_onednn
from _support.calls import attention_call
from _support.numerics import in_float64, with_grads
from mega_plugin.backends.cpu_fast.attention_onednn import onednn_attention
from mega_plugin.backends.portable import attention_query_blocks
from mega_plugin.backends.portable.attention_query_blocks import (
    MIN_KEYS,
    query_blocks_attention,
    query_blocks_supports,
    query_slice_rows,
)
from mega_plugin.core.ops import reference_attention, select


@pytest.mark.parametrize(
    "kernel",
    [pytest.param(onednn_attention, marks=requires_onednn, id="onednn"), pytest.param(query_blocks_attention, id="query_blocks")],
)
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no-weights"])
@pytest.mark.parametrize("slice_elements", [1, 7 * 37, 1 << 20], ids=["one-row-slices", "uneven-slices", "one-slice"])
@pytest.mark.parametrize(ATTENTION_CASE_FIELDS, ATTENTION_CASES)
def test_attention_matches_reference_outputs_weights_and_gradients(
    batch: int,
    chunks: int,
    query_length: int,
    key_length: int,
    query_offset: int,
    causal: bool,
    activation: str,
    padded: bool,
    slice_elements: int,
    need_weights: bool,
    kernel: Callable[..., tuple[Tensor, Tensor | None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both kernels that cut frames into query slices (``SLICE_ELEMENTS``) against the reference."""
    monkeypatch.setattr(attention_query_blocks, "SLICE_ELEMENTS", slice_elements)
    query, key, value, bias, key_mask = attention_inputs(batch, chunks, query_length, key_length, padded=padded)
    query, key, value, bias = (t.requires_grad_() for t in (query, key, value, bias))
    options = attention_options(activation=activation, causal=causal, query_offset=query_offset, need_weights=need_weights)

    def run(attention: Callable[..., tuple[Tensor, Tensor | None]]) -> Callable[..., Tensor]:
        def output(q: Tensor, k: Tensor, v: Tensor, b: Tensor) -> Tensor:
            out, weights = attention(q, k, v, b, key_mask, options)
            assert (weights is not None) == need_weights
            return out if weights is None else torch.cat([out, weights], dim=-1)

        return output

    expected, expected_grads = in_float64(run(reference_attention), query, key, value, bias)
    got, got_grads = with_grads(run(kernel), query, key, value, bias)
    torch.testing.assert_close(got.double(), expected, rtol=2e-5, atol=2e-5)
    for name, g, e in zip(["query", "key", "value", "bias"], got_grads, expected_grads):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-4, msg=name)
    # Without autograd onednn writes each slice into one output tensor, and runs softmax slices in
    # one scores buffer with the scale folded into the query: other rounding, the same tolerance.
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            out, weights = kernel(query, key, value, bias, key_mask, options)
        assert (weights is not None) == need_weights
        got_without_grad = torch.cat([out, weights], -1) if need_weights else out
        torch.testing.assert_close(got_without_grad.double(), expected, rtol=2e-5, atol=2e-5)


def test_slices_hold_about_the_target_number_of_scores() -> None:
    assert query_slice_rows(4, 2048, 2048) * 4 * 2048 <= attention_query_blocks.SLICE_ELEMENTS
    assert query_slice_rows(1, 10**9, 5) == 1  # at least one query per slice
    assert query_slice_rows(1, 4, 3) == 3  # never more than the queries


CALL: Final = attention_call(
    activation="laplace", causal=True, query_length=MIN_KEYS, key_length=MIN_KEYS, need_weights=True, has_key_mask=True
)


@pytest.mark.parametrize(
    "change,reason",
    [
        pytest.param({"dropout_p": 0.1}, "dropout", id="dropout"),
        pytest.param({"key_length": MIN_KEYS - 1}, f"< {MIN_KEYS}", id="short-frame"),
        pytest.param({"device": torch.device("cuda")}, "accelerators", id="not-cpu"),
    ],
)
def test_declines_with_a_reason(change: dict[str, Any], reason: str) -> None:
    support = query_blocks_supports(dataclasses.replace(CALL, **change))
    assert not support.ok and reason in support.reason


def test_auto_serves_long_cpu_frames_of_any_activation_with_masks_and_weights() -> None:
    assert query_blocks_supports(CALL).ok
    # onednn (priority 7) serves these frames where oneDNN works; with oneDNN off, query_blocks does
    with torch.backends.mkldnn.flags(enabled=False):
        assert select("attention", "auto", CALL).name == "query_blocks"


def test_dropout_while_training_raises() -> None:
    q = torch.zeros(1, 1, 4, 8)
    with pytest.raises(ValueError, match="dropout"):
        query_blocks_attention(
            q, q, q, None, None, attention_options(dropout_p=0.1, training=True, need_weights=True)
        )
