"""The ``sdpa`` attention kernel against the ``reference`` kernel: outputs, gradients, refusals.

The reference kernel is checked against the formulas in ``tests/core/ops/test_attention_kernel.py``; here the
SDPA path must reproduce it (outputs and the gradients of query, key, value and bias) for the
calls it accepts, and decline the others with a reason that names the cause.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import pytest
import torch
from torch import Tensor

from _support.attention import attention_options
from _support.calls import attention_call
from _support.configs import tiny_config
from mega_plugin.backends.cpu_fast.attention_onednn import onednn_attention_supports
from mega_plugin.backends.portable.attention_query_blocks import query_blocks_supports
from mega_plugin.backends.portable.attention_sdpa import MIN_CPU_KEYS, sdpa_attention, sdpa_supports
from mega_plugin.core import MegaBackbone
from mega_plugin.core.ops import AttentionCall, KernelError, reference_attention, select

TOLERANCE: Final = dict(atol=2e-5, rtol=1e-4)
CASES: Final = [
    # (batch, chunks, query_length, key_length, query_offset, causal, with_bias)
    pytest.param(2, 1, 37, 37, 0, False, True, id="B2-C1-L37-bidir-bias"),
    pytest.param(2, 3, 16, 16, 0, False, True, id="B2-C3-L16-chunked-bias"),
    pytest.param(2, 1, 40, 40, 0, True, True, id="B2-C1-L40-causal-bias"),
    pytest.param(1, 1, 5, 21, 16, True, True, id="B1-C1-Lq5-Lk21-offset16-causal"),
    pytest.param(2, 2, 12, 12, 0, True, False, id="B2-C2-L12-causal-nobias"),
    pytest.param(2, 1, 9, 9, 0, False, False, id="B2-C1-L9-nobias"),
]
VALUE_SIZES: Final = [pytest.param(6, id="V6-math"), pytest.param(8, id="V8-one-head"), pytest.param(24, id="V24-three-heads")]


def leaves(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("value_size", VALUE_SIZES)
@pytest.mark.parametrize("batch,chunks,query_length,key_length,query_offset,causal,with_bias", CASES)
def test_matches_reference_outputs_and_gradients(
    batch: int,
    chunks: int,
    query_length: int,
    key_length: int,
    query_offset: int,
    causal: bool,
    with_bias: bool,
    value_size: int,
) -> None:
    generator = torch.Generator().manual_seed(query_length * 31 + key_length)
    query = torch.randn(batch, chunks, query_length, 8, generator=generator)
    key = torch.randn(batch, chunks, key_length, 8, generator=generator)
    value = torch.randn(batch, chunks, key_length, value_size, generator=generator)
    bias = torch.randn(query_length, key_length, generator=generator) if with_bias else None
    upstream = torch.randn(batch, chunks, query_length, value_size, generator=generator)
    results = []
    for kernel in (reference_attention, sdpa_attention):
        q, k, v, b = leaves(query, key, value, bias)
        output, weights = kernel(q, k, v, b, None, attention_options(causal=causal, query_offset=query_offset))
        assert weights is None
        (output * upstream).sum().backward()
        results.append((output.detach(), [t.grad for t in (q, k, v, b) if t is not None]))
    (ref_out, ref_grads), (fast_out, fast_grads) = results
    torch.testing.assert_close(fast_out, ref_out, **TOLERANCE)
    for fast_grad, ref_grad in zip(fast_grads, ref_grads):
        torch.testing.assert_close(fast_grad, ref_grad, **TOLERANCE)


BASE_CALL: Final = attention_call(query_length=2048, key_length=2048)
"""One long unmasked softmax frame on CPU (fp32)."""


@pytest.mark.parametrize(
    "change,reason",
    [
        pytest.param({"activation": "laplace"}, "only softmax", id="laplace"),
        pytest.param({"activation": "relu2"}, "only softmax", id="relu2"),
        pytest.param({"need_weights": True}, "need_weights", id="weights"),
        pytest.param({"dropout_p": 0.1}, "dropout", id="dropout"),
        pytest.param({"has_key_mask": True}, "padding mask", id="padding"),
        pytest.param({"key_length": 256, "query_length": 256}, "key_length 256", id="short-cpu-frame"),
    ],
)
def test_declines_with_a_reason_and_auto_falls_back(change: dict[str, Any], reason: str) -> None:
    call = dataclasses.replace(BASE_CALL, **change)
    support = sdpa_supports(call)
    assert not support.ok and reason in support.reason
    # On CPU, frames that sdpa declines go to onednn or query_blocks (when they serve them), else to the reference.
    assert select("attention", "auto", call).name == cpu_choice(call)
    with pytest.raises(KernelError, match="'sdpa' cannot serve"):
        select("attention", "sdpa", call)


def cpu_choice(call: AttentionCall) -> str:
    """The kernel ``auto`` must pick on CPU: the first of onednn (priority 7), query_blocks (6) that serves."""
    if onednn_attention_supports(call).ok:
        return "onednn"
    return "query_blocks" if query_blocks_supports(call).ok else "reference"


def test_auto_picks_sdpa_for_long_unmasked_frames_off_cpu() -> None:
    """On CPU onednn or query_blocks take long frames; elsewhere both decline and sdpa serves."""
    long_frame = dataclasses.replace(BASE_CALL, key_length=MIN_CPU_KEYS)
    assert select("attention", "auto", long_frame).name == cpu_choice(long_frame)
    assert cpu_choice(long_frame) in ("onednn", "query_blocks")
    assert select("attention", "auto", dataclasses.replace(long_frame, device=torch.device("cuda"))).name == "sdpa"


def test_direct_calls_outside_its_domain_raise() -> None:
    q = torch.zeros(1, 1, 4, 8)
    with pytest.raises(ValueError, match="softmax"):
        sdpa_attention(q, q, q, None, None, attention_options(activation="laplace"))
    with pytest.raises(ValueError, match="need_weights"):
        sdpa_attention(q, q, q, None, None, attention_options(need_weights=True))
    mask = torch.ones(1, 1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="key_mask"):
        sdpa_attention(q, q, q, None, mask, attention_options())


@pytest.mark.parametrize("kernel", ["auto", "sdpa", "query_blocks", "onednn"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_whole_model_fast_kernels_match_forced_reference(causal: bool, kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny unchunked model over 1100 tokens: auto (onednn + chunked_scan on CPU) or a forced
    fast attention kernel gives the same output as the reference kernels."""
    config = tiny_config(bidirectional=not causal, is_decoder=causal, max_positions=2048)
    torch.manual_seed(0)
    model = MegaBackbone(config).eval()
    tokens = torch.randint(3, 50, (1, 1100))
    call = dataclasses.replace(BASE_CALL, causal=causal, key_length=1100)
    assert select("attention", "auto", call).name == cpu_choice(call)
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_ATTENTION", kernel)
    fast = model(tokens).hidden
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_ATTENTION", "reference")
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_EMA", "reference")
    reference = model(tokens).hidden
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-4)
