"""The reference EMA kernel: FFT convolution vs recurrence vs direct double sums, state algebra.

Every expected value is computed in float64 from the formulas of the notes
(``k[d, l] = sum_n input_gain * decay**l * output_gain``, :mod:`_support.ema`), never from the
code under test. The module built on the kernel is tested in ``tests/core/test_ema.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from _support.ema import direct_ema, direct_kernel, direct_recurrence
from mega_plugin.core.ops import EmaOptions, EmaCoefficients, reference_ema
from mega_plugin.core.ops.ema.reference import ema_recurrent, fast_fft_length

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
    output, final = reference_ema(x, coefficients, state, EmaOptions(bidirectional=False, truncation=None, return_state=True))
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
    output, state = reference_ema(x, coefficients, None, EmaOptions(bidirectional=False, truncation=None, return_state=False))
    assert state is None
    close(output, direct_ema(x, direct_kernel(coefficients, length), bidirectional=False))


@pytest.mark.parametrize("components", [1, 3], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("length", LENGTHS, ids=lambda n: f"L{n}")
def test_bidirectional_matches_direct_sum(length: int, components: int, generator: torch.Generator) -> None:
    coefficients = random_coefficients(2 * DIM, components, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    output, _ = reference_ema(x, coefficients, None, EmaOptions(bidirectional=True, truncation=None, return_state=False))
    close(output, direct_ema(x, direct_kernel(coefficients, length), bidirectional=True))


def test_bidirectional_refuses_state(generator: torch.Generator) -> None:
    coefficients = random_coefficients(2 * DIM, 2, generator=generator)
    with pytest.raises(ValueError, match="bidirectional"):
        reference_ema(torch.zeros(1, 3, DIM), coefficients, None, EmaOptions(bidirectional=True, truncation=None, return_state=True))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("truncation", [1, 5, 300], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("length", [1, 7, 64], ids=lambda n: f"L{n}")
def test_truncation_matches_truncated_sum(
    length: int, truncation: int, bidirectional: bool, generator: torch.Generator
) -> None:
    coefficients = random_coefficients((2 if bidirectional else 1) * DIM, 3, generator=generator)
    x = torch.randn(BATCH, length, DIM, generator=generator)
    output, _ = reference_ema(x, coefficients, None, EmaOptions(bidirectional=bidirectional, truncation=truncation, return_state=False))
    kernel = direct_kernel(coefficients, length, truncation)
    close(output, direct_ema(x, kernel, bidirectional=bidirectional))


@pytest.mark.parametrize("split", [1, 5, 31, 63], ids=lambda s: f"split{s}")
def test_split_with_carried_state_equals_one_call(split: int, generator: torch.Generator) -> None:
    coefficients = random_coefficients(DIM, 3, generator=generator)
    x = torch.randn(BATCH, 64, DIM, generator=generator)
    whole, whole_state = reference_ema(x, coefficients, None, EmaOptions(bidirectional=False, truncation=None, return_state=True))
    first, state = reference_ema(x[:, :split], coefficients, None, EmaOptions(bidirectional=False, truncation=None, return_state=True))
    second, final = reference_ema(x[:, split:], coefficients, state, EmaOptions(bidirectional=False, truncation=None, return_state=True))
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
