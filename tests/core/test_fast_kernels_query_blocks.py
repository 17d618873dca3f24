"""The ``query_blocks`` attention kernel against the ``reference`` kernel: outputs, weights, gradients.

Query slices must reproduce the whole-frame reference exactly up to rounding, for every
activation, causal frames with a query offset, padding masks (fully padded frames included),
``need_weights``, and slices that do not divide the queries evenly.
"""

from __future__ import annotations

from typing import Any, Final

import pytest
import torch

from mega_plugin.core.kernels import attention_query_blocks, query_blocks_attention, reference_attention, resolve_kernel
from mega_plugin.core.kernels.attention_query_blocks import MIN_KEYS, query_blocks_supports, query_slice_rows

TOLERANCE: Final = dict(atol=2e-5, rtol=1e-4)
CASES: Final = [
    # (batch, chunks, query_length, key_length, query_offset, causal, activation, padded)
    pytest.param(2, 1, 37, 37, 0, False, "softmax", False, id="B2-L37-softmax"),
    pytest.param(2, 3, 16, 16, 0, True, "softmax", True, id="B2-C3-L16-causal-padded"),
    pytest.param(1, 1, 5, 21, 16, True, "softmax", False, id="B1-Lq5-Lk21-offset16-causal"),
    pytest.param(2, 1, 23, 23, 0, True, "laplace", True, id="B2-L23-laplace-causal-padded"),
    pytest.param(2, 2, 19, 19, 0, False, "relu2", True, id="B2-C2-L19-relu2-padded"),
]


def options(**overrides: Any) -> dict[str, Any]:
    base = dict(scale=0.3, dropout_p=0.0, training=False, need_weights=True)
    return {**base, **overrides}


@pytest.mark.parametrize("slice_elements", [1, 7 * 37, 1 << 20], ids=["one-row-slices", "uneven-slices", "one-slice"])
@pytest.mark.parametrize("batch,chunks,query_length,key_length,query_offset,causal,activation,padded", CASES)
def test_matches_reference_outputs_weights_and_gradients(
    batch: int,
    chunks: int,
    query_length: int,
    key_length: int,
    query_offset: int,
    causal: bool,
    activation: str,
    padded: bool,
    slice_elements: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(attention_query_blocks, "SLICE_ELEMENTS", slice_elements)
    generator = torch.Generator().manual_seed(query_length * 31 + key_length)
    query = torch.randn(batch, chunks, query_length, 8, generator=generator)
    key = torch.randn(batch, chunks, key_length, 8, generator=generator)
    value = torch.randn(batch, chunks, key_length, 12, generator=generator)
    bias = torch.randn(query_length, key_length, generator=generator)
    key_mask = None
    if padded:
        key_mask = torch.rand(batch, chunks, key_length, generator=generator) > 0.3
        key_mask[0, 0] = False  # a fully padded frame
    upstream = torch.randn(batch, chunks, query_length, 12, generator=generator)
    results = []
    for kernel in (reference_attention, query_blocks_attention):
        q, k, v, b = (t.detach().clone().requires_grad_(True) for t in (query, key, value, bias))
        output, weights = kernel(
            q, k, v, b, key_mask, **options(activation=activation, causal=causal, query_offset=query_offset)
        )
        (output * upstream).sum().backward()
        results.append((output.detach(), weights.detach(), [t.grad for t in (q, k, v, b)]))
    (ref_out, ref_weights, ref_grads), (out, weights, grads) = results
    torch.testing.assert_close(out, ref_out, **TOLERANCE)
    torch.testing.assert_close(weights, ref_weights, **TOLERANCE)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, **TOLERANCE)


def test_slices_hold_about_the_target_number_of_scores() -> None:
    assert query_slice_rows(4, 2048, 2048) * 4 * 2048 <= attention_query_blocks.SLICE_ELEMENTS
    assert query_slice_rows(1, 10**9, 5) == 1  # at least one query per slice
    assert query_slice_rows(1, 4, 3) == 3  # never more than the queries


CALL: Final[dict[str, Any]] = {
    "activation": "laplace",
    "causal": True,
    "query_length": MIN_KEYS,
    "key_length": MIN_KEYS,
    "num_chunks": 1,
    "need_weights": True,
    "has_key_mask": True,
    "dropout_p": 0.0,
    "dtype": torch.float32,
    "device": torch.device("cpu"),
}


@pytest.mark.parametrize(
    "change,reason",
    [
        pytest.param({"dropout_p": 0.1}, "dropout", id="dropout"),
        pytest.param({"key_length": MIN_KEYS - 1}, f"< {MIN_KEYS}", id="short-frame"),
        pytest.param({"device": torch.device("cuda")}, "accelerators", id="not-cpu"),
    ],
)
def test_declines_with_a_reason(change: dict[str, Any], reason: str) -> None:
    declined = query_blocks_supports({**CALL, **change})
    assert declined is not None and reason in declined


def test_auto_serves_long_cpu_frames_of_any_activation_with_masks_and_weights() -> None:
    assert query_blocks_supports(CALL) is None
    # onednn (priority 7) serves these frames where oneDNN works; with oneDNN off, query_blocks does
    with torch.backends.mkldnn.flags(enabled=False):
        assert resolve_kernel("attention", "auto", CALL).name == "query_blocks"


def test_dropout_while_training_raises() -> None:
    q = torch.zeros(1, 1, 4, 8)
    with pytest.raises(ValueError, match="dropout"):
        query_blocks_attention(
            q, q, q, None, None, **options(activation="softmax", causal=False, query_offset=0, dropout_p=0.1, training=True)
        )
