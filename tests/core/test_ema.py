"""The damped EMA: FFT kernel vs recurrence vs direct double sums, state algebra, the module.

Every expected value is computed here in float64 from the formulas of the notes
(``k[d, l] = sum_n input_gain * decay**l * output_gain``), never from the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mega_plugin.core import MultiDimensionDampedEma
from mega_plugin.core.kernels import EmaCoefficients, reference_ema
from mega_plugin.core.kernels.ema_reference import ema_recurrent, fast_fft_length

BATCH, DIM = 2, 5
LENGTHS = (1, 2, 7, 64, 257)
TOLERANCE = dict(atol=1e-4, rtol=1e-4)  # fp32 FFT against fp64 sums


def random_coefficients(channels: int, components: int, *, generator: torch.Generator) -> EmaCoefficients:
    """Random gains and decays strictly inside (0, 1), (channels, components) each."""
    return EmaCoefficients(
        input_gain=torch.randn(channels, components, generator=generator),
        decay=0.05 + 0.9 * torch.rand(channels, components, generator=generator),
        output_gain=torch.randn(channels, components, generator=generator),
    )


def direct_kernel(coefficients: EmaCoefficients, length: int, truncation: int | None = None) -> Tensor:
    """k[d, l] = sum_n input_gain * decay**l * output_gain in float64, zero beyond truncation."""
    input_gain = coefficients.input_gain.double()
    decay = coefficients.decay.double()
    output_gain = coefficients.output_gain.double()
    kernel = torch.zeros(input_gain.shape[0], length, dtype=torch.float64)
    for lag in range(length if truncation is None else min(length, truncation)):
        kernel[:, lag] = (input_gain * decay**lag * output_gain).sum(-1)
    return kernel


def direct_ema(x: Tensor, kernel: Tensor, *, bidirectional: bool) -> Tensor:
    """y_t = sum_{s<=t} k1[t-s] x_s (+ sum_{s>=t} k2[s-t] x_s) as an explicit (L x L) matrix sum."""
    length, dim = x.shape[1], x.shape[2]
    lags = torch.arange(length).view(-1, 1) - torch.arange(length).view(1, -1)  # t - s
    forward = kernel[:dim][:, lags.clamp(min=0)] * (lags >= 0)  # (D, t, s)
    matrix = forward
    if bidirectional:
        matrix = matrix + kernel[dim:][:, (-lags).clamp(min=0)] * (lags <= 0)
    return torch.einsum("dts,bsd->btd", matrix, x.double())


def direct_recurrence(x: Tensor, coefficients: EmaCoefficients, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h_t = input_gain x_t + decay h_{t-1}; y_t = sum_n output_gain h_t, in float64."""
    input_gain, decay = coefficients.input_gain.double(), coefficients.decay.double()
    output_gain = coefficients.output_gain.double()
    h = torch.zeros(x.shape[0], *input_gain.shape, dtype=torch.float64) if state is None else state.double()
    outputs = []
    for step in range(x.shape[1]):
        h = input_gain * x[:, step, :, None].double() + decay * h
        outputs.append((h * output_gain).sum(-1))
    return torch.stack(outputs, dim=1), h


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def close(actual: Tensor, expected: Tensor, **tolerance: float) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), **(tolerance or TOLERANCE))


@pytest.mark.parametrize("components", [1, 3], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
@pytest.mark.parametrize("with_state", [False, True], ids=["fresh", "initial_state"])
def test_fft_matches_recurrence(length: int, components: int, with_state: bool, generator: torch.Generator) -> None:
    coefficients = random_coefficients(DIM, components, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    state = torch.randn(BATCH, DIM, components, generator=generator) if with_state else None
    output, final = reference_ema(
        x, coefficients, bidirectional=False, truncation=None, initial_state=state, return_state=True
    )
    expected, expected_final = direct_recurrence(x, coefficients, state)
    assert output.shape == (BATCH, length, DIM) and final.shape == (BATCH, DIM, components)
    close(output, expected)
    close(final, expected_final)
    # The library's own step-by-step form agrees too.
    recurrent, recurrent_final = ema_recurrent(x, coefficients, state)
    close(recurrent, expected)
    close(recurrent_final, expected_final)


@pytest.mark.parametrize("components", [1, 3], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
def test_causal_matches_direct_sum(length: int, components: int, generator: torch.Generator) -> None:
    coefficients = random_coefficients(DIM, components, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    output, state = reference_ema(
        x, coefficients, bidirectional=False, truncation=None, initial_state=None, return_state=False
    )
    assert state is None
    close(output, direct_ema(x, direct_kernel(coefficients, length), bidirectional=False))


@pytest.mark.parametrize("components", [1, 3], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
def test_bidirectional_matches_direct_sum(length: int, components: int, generator: torch.Generator) -> None:
    coefficients = random_coefficients(2 * DIM, components, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    output, _ = reference_ema(
        x, coefficients, bidirectional=True, truncation=None, initial_state=None, return_state=False
    )
    close(output, direct_ema(x, direct_kernel(coefficients, length), bidirectional=True))


def test_bidirectional_refuses_state(generator: torch.Generator) -> None:
    coefficients = random_coefficients(2 * DIM, 2, generator=generator)
    with pytest.raises(ValueError, match="bidirectional"):
        reference_ema(
            torch.zeros(1, 3, DIM), coefficients, bidirectional=True, truncation=None, initial_state=None,
            return_state=True,
        )


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("truncation", [1, 5, 300], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("length", [1, 7, 64], ids=lambda n: f"L{n}")
def test_truncation_matches_truncated_sum(
    length: int, truncation: int, bidirectional: bool, generator: torch.Generator
) -> None:
    coefficients = random_coefficients((2 if bidirectional else 1) * DIM, 3, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    output, _ = reference_ema(
        x, coefficients, bidirectional=bidirectional, truncation=truncation, initial_state=None, return_state=False
    )
    kernel = direct_kernel(coefficients, length, truncation)
    close(output, direct_ema(x, kernel, bidirectional=bidirectional))


@pytest.mark.parametrize("split", [1, 5, 31, 63], ids=lambda s: f"split{s}")
def test_split_with_carried_state_equals_one_call(split: int, generator: torch.Generator) -> None:
    coefficients = random_coefficients(DIM, 3, generator=generator)
    x = torch.randn(BATCH, 64, DIM, generator=generator)
    whole, whole_state = reference_ema(
        x, coefficients, bidirectional=False, truncation=None, initial_state=None, return_state=True
    )
    first, state = reference_ema(
        x[:, :split], coefficients, bidirectional=False, truncation=None, initial_state=None, return_state=True
    )
    second, final = reference_ema(
        x[:, split:], coefficients, bidirectional=False, truncation=None, initial_state=state, return_state=True
    )
    close(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=1e-5)
    close(final, whole_state, atol=1e-5, rtol=1e-5)


def is_smooth(n: int) -> bool:
    for prime in (2, 3, 5):
        while n % prime == 0:
            n //= prime
    return n == 1


def test_fast_fft_length_is_smallest_smooth_number() -> None:
    smooth = [n for n in range(1, 2400) if is_smooth(n)]
    for minimum in list(range(0, 1100)) + [2 * 257, 2 * 1021, 2049]:
        found = fast_fft_length(minimum)
        expected = min(n for n in smooth if n >= max(minimum, 1))
        assert found == expected, (minimum, found, expected)


# --- the module -------------------------------------------------------------------------


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
