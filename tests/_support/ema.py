"""The damped EMA written from the notes, in float64: the ground truth of every EMA test.

``k[d, l] = sum_n input_gain[d, n] * decay[d, n]**l * output_gain[d, n]``; the causal EMA is
``y_t = sum_{s<=t} k[t - s] x_s``, the bidirectional one adds ``sum_{s>=t} k2[s - t] x_s`` with
the second half of the channels; the recurrence is ``h_t = input_gain x_t + decay h_{t-1}``,
``y_t = sum_n output_gain h_t``. Nothing here calls the code under test.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mega_plugin.core.ops import EmaCoefficients


def direct_kernel(coefficients: EmaCoefficients, length: int, truncation: int | None = None) -> Tensor:
    """k[d, l] = sum_n input_gain * decay**l * output_gain in float64, zero from ``truncation`` on."""
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
    matrix = kernel[:dim][:, lags.clamp(min=0)] * (lags >= 0)  # (D, t, s)
    if bidirectional:
        matrix = matrix + kernel[dim:][:, (-lags).clamp(min=0)] * (lags <= 0)
    return torch.einsum("dts,bsd->btd", matrix, x.double())


def direct_recurrence(x: Tensor, coefficients: EmaCoefficients, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h_t = input_gain x_t + decay h_{t-1}; y_t = sum_n output_gain h_t, in float64: (y (B, L, D), h (B, D, N))."""
    input_gain, decay = coefficients.input_gain.double(), coefficients.decay.double()
    output_gain = coefficients.output_gain.double()
    h = torch.zeros(x.shape[0], *input_gain.shape, dtype=torch.float64) if state is None else state.double()
    outputs = []
    for step in range(x.shape[1]):
        h = input_gain * x[:, step, :, None].double() + decay * h
        outputs.append((h * output_gain).sum(-1))
    y = torch.stack(outputs, dim=1) if outputs else x.new_zeros(x.shape, dtype=torch.float64)
    return y, h


def float64_ema(
    x: Tensor,
    coefficients: EmaCoefficients,
    *,
    bidirectional: bool,
    truncation: int | None,
    initial_state: Tensor | None,
    return_state: bool,
) -> tuple[Tensor, Tensor | None]:
    """A causal EMA *kernel* in float64 (the op's signature), for exactness tests of whole models."""
    assert not bidirectional
    if truncation is not None:
        kernel = direct_kernel(coefficients, x.shape[1], truncation)
        return direct_ema(x, kernel, bidirectional=False), None
    y, h = direct_recurrence(x, coefficients, initial_state)
    return y, (h if return_state else None)
