"""The EMA sub-layer (``MultiDimensionDampedEma``): ``silu(EMA(x) + residual_weight * x)`` from its
parameters, padding, streaming (state and window) against one full call.

Expected values come from the notes' formulas in float64 (:mod:`_support.ema`); the reference
kernel itself is tested in ``tests/core/ops/test_ema_kernel.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from _support.ema import direct_ema, direct_kernel
from mega_plugin.core import MultiDimensionDampedEma
from mega_plugin.core.ops import EmaCoefficients

BATCH, DIM = 2, 5
TOLERANCE = dict(atol=1e-4, rtol=1e-4)  # fp32 FFT against fp64 sums


def close(actual: Tensor, expected: Tensor, **tolerance: float) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), **(tolerance or TOLERANCE))


def make_module(*, bidirectional: bool, truncation: int | None = None, ema_size: int = 3) -> MultiDimensionDampedEma:
    module = MultiDimensionDampedEma(DIM, ema_size, bidirectional=bidirectional, truncation=truncation)
    module.reset_parameters()
    return module


def module_formula(module: MultiDimensionDampedEma, x: Tensor) -> Tensor:
    """silu(EMA(x) + residual_weight * x) from the parameters, by the notes' formulas (float64)."""
    p = torch.sigmoid(module.damping_factor.detach().double().squeeze(-1))
    q = 1.0 - p * torch.sigmoid(module.decay_factor.detach().double().squeeze(-1))
    coefficients = EmaCoefficients(
        input_gain=p * module.ema_expansion_matrix.detach().double().squeeze(-1),
        decay=q,
        output_gain=module.kernel_projection_matrix.detach().double() * math.sqrt(1.0 / module.ema_size),
    )
    kernel = direct_kernel(coefficients, x.shape[1], module.truncation)
    y = direct_ema(x, kernel, bidirectional=module.bidirectional)
    return F.silu(y + module.residual_weight.detach().double() * x.double())


@pytest.mark.parametrize("truncation", [None, 4], ids=["full", "T4"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_module_matches_parameter_formula(bidirectional: bool, truncation: int | None) -> None:
    module = make_module(bidirectional=bidirectional, truncation=truncation)
    x = torch.randn(BATCH, 11, DIM)
    output, state, window = module(x)
    assert state is None and window is None
    close(output, module_formula(module, x))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_module_padding_enters_as_zero(bidirectional: bool) -> None:
    module = make_module(bidirectional=bidirectional)
    x = torch.randn(BATCH, 12, DIM)
    key_mask = torch.ones(BATCH, 12, dtype=torch.bool)
    key_mask[0, 9:] = False  # right padding
    key_mask[1, 3:5] = False  # holes
    output, _, _ = module(x, key_mask=key_mask)
    zeroed = x.masked_fill(~key_mask.unsqueeze(-1), 0.0)
    expected = module_formula(module, zeroed)
    valid = key_mask.unsqueeze(-1).expand_as(output)
    close(output[valid], expected[valid])
    # Right padding: the valid prefix equals a run over the prefix alone.
    prefix, _, _ = module(x[:1, :9])
    close(output[:1, :9], prefix, atol=1e-5, rtol=1e-5)
    # The padded values themselves never matter.
    noisy = torch.where(key_mask.unsqueeze(-1), x, torch.randn_like(x) * 100)
    again, _, _ = module(noisy, key_mask=key_mask)
    close(again[valid], output[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pieces", [[5, 7], [1, 1, 1, 9], [2, 3, 1, 6], [1] * 12], ids=lambda p: "-".join(map(str, p)))
@pytest.mark.parametrize("truncation", [None, 1, 3, 20], ids=lambda t: f"T{t}")
def test_module_streaming_equals_full_call(truncation: int | None, pieces: list[int]) -> None:
    module = make_module(bidirectional=False, truncation=truncation)
    x = torch.randn(BATCH, sum(pieces), DIM)
    full, _, _ = module(x)
    state = window = None
    outputs, start = [], 0
    for size in pieces:
        out, state, window = module(x[:, start : start + size], state=state, window=window, return_state=True)
        outputs.append(out)
        start += size
        if truncation is None:
            assert window is None and state.shape == (BATCH, DIM, module.ema_size)
        else:
            assert state is None and window.shape[1] <= truncation - 1
    close(torch.cat(outputs, dim=1), full, atol=1e-5, rtol=1e-5)


def test_module_bidirectional_cannot_stream() -> None:
    module = make_module(bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        module(torch.randn(1, 3, DIM), return_state=True)


def test_module_coefficients_follow_parameter_changes_in_eval() -> None:
    """The reference caches the kernel in eval mode and never invalidates it; we must not."""
    module = make_module(bidirectional=False).eval()
    x = torch.randn(BATCH, 9, DIM)
    with torch.no_grad():
        before, _, _ = module(x)
        close(before, module_formula(module, x))
        for parameter in (module.damping_factor, module.decay_factor, module.kernel_projection_matrix):
            parameter.add_(0.5)
            after, _, _ = module(x)
            assert (after - before).abs().max() > 1e-3
            close(after, module_formula(module, x))
            before = after
