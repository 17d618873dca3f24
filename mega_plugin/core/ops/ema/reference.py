"""Reference multi-dimensional damped EMA: the FFT convolution and the recurrence.

Notation (per channel ``d`` and EMA component ``n``):
``input_gain = sigmoid(damping) * expansion``, ``decay q = 1 - sigmoid(damping) * sigmoid(decay)``,
``output_gain = projection / sqrt(N)``. The recurrence is
``h_t = input_gain * x_t + q * h_{t-1}``, ``y_t = sum_n output_gain * h_t``; its impulse
response is the kernel ``k[d, l] = sum_n input_gain * q**l * output_gain``.

These functions are the tested ground truth; fast kernels must agree with them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..calls import EmaCoefficients, EmaOptions

_FAST_FFT_PRIMES = (2, 3, 5)


def fast_fft_length(minimum: int) -> int:
    """Smallest n >= minimum whose only prime factors are 2, 3 and 5 (fast for pocketfft/cuFFT)."""
    n = max(1, minimum)
    while True:
        rest = n
        for prime in _FAST_FFT_PRIMES:
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return n
        n += 1


def ema_kernel(coefficients: EmaCoefficients, length: int) -> Tensor:
    """Impulse response ``k[d, l]`` for lags ``0..length-1``; shape (K, length), fp32."""
    decay = coefficients.decay.float()
    lags = torch.arange(length, device=decay.device, dtype=torch.float32)
    # (K, N, length): q ** l through exp(l * log q), as the reference computes it.
    powers = torch.exp(lags.view(1, 1, length) * torch.log(decay).unsqueeze(-1))
    gains = (coefficients.input_gain.float() * coefficients.output_gain.float()).unsqueeze(-1)
    return (gains * powers).sum(dim=1)


def _fft_conv(signal: Tensor, kernel: Tensor, fft_length: int) -> Tensor:
    # signal (B, D, L), kernel (D, Lk) -> full linear convolution (B, D, fft_length), fp32
    signal_f = torch.fft.rfft(signal.float(), n=fft_length)
    kernel_f = torch.fft.rfft(kernel.float(), n=fft_length)
    return torch.fft.irfft(signal_f * kernel_f, n=fft_length)


def ema_fft(
    x: Tensor,
    coefficients: EmaCoefficients,
    *,
    bidirectional: bool,
    truncation: int | None,
) -> Tensor:
    """EMA over a whole sequence by FFT convolution. ``x`` (B, L, D) -> (B, L, D) in fp32.

    Causal: ``y_t = sum_{s<=t} k[t-s] x_s``. Bidirectional (K = 2D rows, forward kernel first):
    ``y_t = sum_{s<=t} k1[t-s] x_s + sum_{s>=t} k2[s-t] x_s`` (lag 0 counted in both).
    """
    batch, length, dim = x.shape
    if batch == 0 or length == 0:
        return x.new_zeros(batch, length, dim, dtype=torch.float32)  # no FFT of an empty signal
    kernel_length = length if truncation is None else min(truncation, length)
    kernel = ema_kernel(coefficients, kernel_length)
    signal = x.transpose(1, 2)  # (B, D, L)
    if not bidirectional:
        full = _fft_conv(signal, kernel, fast_fft_length(length + kernel_length - 1))
        return full[..., :length].transpose(1, 2)
    forward_kernel, backward_kernel = kernel[:dim], kernel[dim:]
    # One two-sided kernel of 2*Lk - 1 taps with lag 0 at index Lk - 1.
    two_sided = torch.nn.functional.pad(forward_kernel, (kernel_length - 1, 0)) + torch.nn.functional.pad(
        backward_kernel.flip(-1), (0, kernel_length - 1)
    )
    full = _fft_conv(signal, two_sided, fast_fft_length(length + 2 * kernel_length - 2))
    return full[..., kernel_length - 1 : kernel_length - 1 + length].transpose(1, 2)


def ema_state_contribution(coefficients: EmaCoefficients, state: Tensor, length: int) -> Tensor:
    """Output added by a prior state ``h`` (B, D, N) at steps 0..length-1: (B, length, D), fp32.

    ``y_t += sum_n output_gain * q**(t+1) * h``.
    """
    decay = coefficients.decay.float()
    steps = torch.arange(1, length + 1, device=decay.device, dtype=torch.float32)
    powers = torch.exp(steps.view(1, 1, length) * torch.log(decay).unsqueeze(-1))  # (D, N, L)
    weighted = state.float() * coefficients.output_gain.float()  # (B, D, N)
    return torch.einsum("bdn,dnl->bld", weighted, powers)


def ema_final_state(
    x: Tensor, coefficients: EmaCoefficients, initial_state: Tensor | None
) -> Tensor:
    """State after consuming ``x`` (B, L, D): ``sum_l input_gain q**(L-1-l) x_l + q**L h0``; (B, D, N)."""
    length = x.shape[1]
    decay = coefficients.decay.float()
    lags = torch.arange(length - 1, -1, -1, device=decay.device, dtype=torch.float32)
    powers = torch.exp(lags.view(1, 1, length) * torch.log(decay).unsqueeze(-1))  # (D, N, L)
    state = torch.einsum("bld,dnl->bdn", x.float(), powers) * coefficients.input_gain.float()
    if initial_state is not None:
        state = state + initial_state.float() * decay.pow(length)
    return state


def reference_ema(
    x: Tensor, coefficients: EmaCoefficients, initial_state: Tensor | None, options: EmaOptions
) -> tuple[Tensor, Tensor | None]:
    """The ``reference`` EMA kernel: FFT convolution plus exact state algebra (see module doc)."""
    if options.bidirectional and (initial_state is not None or options.return_state):
        raise ValueError("a bidirectional EMA has no streaming state (bidirectional=True)")
    output = ema_fft(x, coefficients, bidirectional=options.bidirectional, truncation=options.truncation)
    if initial_state is not None:
        output = output + ema_state_contribution(coefficients, initial_state, x.shape[1])
    state = ema_final_state(x, coefficients, initial_state) if options.return_state else None
    return output, state


def ema_recurrent(
    x: Tensor, coefficients: EmaCoefficients, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Step-by-step causal EMA (untruncated), the streaming ground truth: (B, L, D), (B, D, N)."""
    batch, length, dim = x.shape
    input_gain = coefficients.input_gain.float()
    decay = coefficients.decay.float()
    output_gain = coefficients.output_gain.float()
    state = (
        initial_state.float()
        if initial_state is not None
        else x.new_zeros(batch, dim, input_gain.shape[-1], dtype=torch.float32)
    )
    outputs = []
    for step in range(length):
        state = input_gain * x[:, step, :, None].float() + decay * state
        outputs.append((state * output_gain).sum(-1))
    stacked = torch.stack(outputs, dim=1) if outputs else x.new_zeros(batch, 0, dim, dtype=torch.float32)
    return stacked, state
