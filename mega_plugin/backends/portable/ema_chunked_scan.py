"""Chunked-scan EMA kernel: no FFT and no (K, N, L) tensor.

The EMA is a linear recurrence with an N-dim state per channel
(``h_t = input_gain * x_t + decay * h_{t-1}``, ``y_t = sum_n output_gain * h_t``). Cut the
sequence into chunks of T steps:

* inside a chunk the output is a (T x T) lower-triangular Toeplitz matrix of the kernel
  ``k[l] = sum_n input_gain q**l output_gain`` applied per channel: one batched matmul,
  B * L * K * T multiply-adds;
* each chunk summarises its inputs into the state it leaves behind (``u_c``, a (N x T) matmul),
  states are carried across chunks by ``h_c = u_c + q**T h_{c-1}`` (a loop over L / T chunks
  on (K, N, B) tensors), and each chunk reads the state it inherited through a (T x N) matmul.

Bidirectional: the backward direction is the causal EMA of the flipped sequence with the
last D rows of coefficients, so both directions run in one pass over 2D channels (lag 0 is
counted in both, as in the reference). Arithmetic is fp32 whatever the input dtype.

A truncated kernel shorter than the sequence is not a finite-state recurrence:
:func:`chunked_scan_supports` declines it and ``auto`` falls back to the FFT reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

from ...core.memo import ValueKeyedCache, records_grad
from ...core.ops import EmaCall, EmaCoefficients, EmaOptions, SUPPORTED, Support, declined
from ...core.tracing import capturing_graph

CHUNK_STEPS: Final = 64
"""Chunk length T: intra-chunk work grows with T, the sequential carry loop with L / T."""

TINY: Final = 1e-30
"""Weights below this are flushed to zero: denormal floats make CPU matmuls 10-50x slower."""


def _powers(decay: Tensor, exponents: Tensor) -> Tensor:
    """``decay ** exponents`` as exp(e log q), (D, N) x (E,) -> (D, N, E), as the reference does."""
    return torch.exp(exponents.view(1, 1, -1) * torch.log(decay).unsqueeze(-1))


def _flush_tiny(weights: Tensor) -> Tensor:
    """Zero the entries below :data:`TINY` in magnitude (they are < 1e-30 of an O(1) output)."""
    return weights * (weights.abs() >= TINY)


def _carry(summaries: Tensor, carry: Tensor, state: Tensor, *, reverse: bool) -> tuple[Tensor, Tensor]:
    """Carry states across chunks: ``h_c = summaries_c + carry * h_{c-1}`` (right to left if ``reverse``).

    ``summaries`` (D, B, C, N); ``state`` (D, B, N) enters the first chunk visited. Returns the
    state each chunk inherits (D, B, C, N) and the state after the last chunk visited.
    """
    # unbind, not indexing per chunk: autograd then joins the chunks' gradients once.
    parts = summaries.unbind(dim=2)
    order = reversed(parts) if reverse else parts
    inherited = []
    for summary in order:
        inherited.append(state)
        state = torch.addcmul(summary, carry, state)
    if reverse:
        inherited.reverse()
    return torch.stack(inherited, dim=2), state


def _lower_toeplitz(kernel: Tensor) -> Tensor:
    """(D, T) -> (D, T, T) with ``[d, t, s] = kernel[d, t - s]`` for ``t >= s`` and 0 above the diagonal.

    Windows over the kernel behind T - 1 zeros, read backwards, rather than an index gather:
    the gather's backward is an accumulating scatter (a sort on CPU), the windows' a strided sum.
    """
    steps = kernel.shape[-1]
    windows = torch.nn.functional.pad(kernel, (steps - 1, 0)).unfold(-1, steps, 1)  # [d, t, j] = padded[d, t + j]
    return windows.flip(-1)  # [d, t, s] = padded[d, t + T - 1 - s] = kernel[d, t - s]


def _contiguous(grad: Tensor) -> Tensor:
    return grad.contiguous()


@dataclass(frozen=True)
class ScanWeights:
    """What the scan needs from the coefficients, tiny entries flushed to zero."""

    matrix: Tensor
    """(D, T, T) intra-chunk Toeplitz matrices (both directions when bidirectional)."""

    gathers: Tensor
    """(D, N or 2N, T), forward direction first: a chunk's inputs -> the state it leaves behind."""

    readouts: Tensor
    """(D, N or 2N, T): the inherited states -> each step of a chunk."""

    carries: list[Tensor]
    """(D, 1, N) per direction: ``decay ** T``, one chunk's decay of a state."""


def _compute_scan_weights(
    coefficients: tuple[Tensor, Tensor, Tensor], backward: tuple[Tensor, Tensor, Tensor] | None, steps: int
) -> ScanWeights:
    input_gain, decay, output_gain = coefficients
    lags = torch.arange(steps, device=decay.device, dtype=torch.float32)
    # Intra-chunk Toeplitz matrices (D, T, T): matrix[d, t, s] = k_fwd[d, t - s] (t >= s) + k_bwd[d, s - t] (s >= t).
    kernel = torch.einsum("dn,dnl->dl", input_gain * output_gain, _powers(decay, lags))  # (D, T)
    matrix = _lower_toeplitz(kernel)
    # Chunk summaries: the forward state at the chunk end, input_gain * q ** (T - 1 - s) ...
    gather = [input_gain.unsqueeze(-1) * _powers(decay, lags.flip(0))]  # (D, N, T)
    # ... read at step t of the next chunk through output_gain * q ** (t + 1).
    readout = [output_gain.unsqueeze(-1) * _powers(decay, lags + 1.0)]  # (D, N, T)
    carries = [decay.pow(steps).unsqueeze(1)]
    if backward is not None:
        back_in, back_decay, back_out = backward
        back_kernel = torch.einsum("dn,dnl->dl", back_in * back_out, _powers(back_decay, lags))
        matrix = matrix + _lower_toeplitz(back_kernel).transpose(1, 2)
        # The backward state at a chunk start, input_gain * q ** s, read at step t of the
        # previous chunk through output_gain * q ** (T - t).
        gather.append(back_in.unsqueeze(-1) * _powers(back_decay, lags))
        readout.append(back_out.unsqueeze(-1) * _powers(back_decay, steps - lags))
        carries.append(back_decay.pow(steps).unsqueeze(1))
    return ScanWeights(
        matrix=_flush_tiny(matrix),
        gathers=_flush_tiny(torch.cat(gather, dim=1)),
        readouts=_flush_tiny(torch.cat(readout, dim=1)),
        carries=[_flush_tiny(c) for c in carries],
    )


CACHED_WEIGHTS: Final = 8
"""How many prepared weights no-grad calls keep (~8 MiB each at D 256, N 16): one per layer of
a model up to this depth, so repeated inference forwards rebuild none (~10 ms per layer)."""

_cached_weights: ValueKeyedCache[ScanWeights] = ValueKeyedCache(capacity=CACHED_WEIGHTS)
"""Prepared weights of recent calls that recorded no gradient, under copies of their
coefficients: a lookup compares coefficient values, so an entry is never stale."""


def _scan_weights(
    coefficients: tuple[Tensor, Tensor, Tensor], backward: tuple[Tensor, Tensor, Tensor] | None, steps: int
) -> ScanWeights:
    tensors = (*coefficients, *(backward or ()))
    if records_grad(tensors):
        return _compute_scan_weights(coefficients, backward, steps)
    weights = _cached_weights.get(steps, tensors)
    if weights is None:
        weights = _compute_scan_weights(coefficients, backward, steps)
        _cached_weights.put(steps, tensors, weights)
    return weights


def _chunked_scan(
    x: Tensor,
    coefficients: tuple[Tensor, Tensor, Tensor],
    backward: tuple[Tensor, Tensor, Tensor] | None,
    initial_state: Tensor | None,
    steps: int,
) -> tuple[Tensor, Tensor]:
    """EMA of ``x`` (B, L, D) fp32 with forward (D, N) coefficients (gain in, decay, gain out).

    With ``backward`` coefficients, adds the anti-causal direction (lag 0 in both). Returns
    the output (B, L, D) and the forward state after the last token (B, D, N).
    """
    batch, length, dim = x.shape
    decay = coefficients[1]
    components = decay.shape[-1]
    chunks = -(-length // steps)
    padded = chunks * steps
    weights = _scan_weights(coefficients, backward, steps)
    matrix, gathers, readouts = weights.matrix, weights.gathers, weights.readouts

    signal = torch.nn.functional.pad(x, (0, 0, 0, padded - length)) if padded != length else x
    # (B, C*T, D) -> (D, B*C, T): channels are the matmul batch, time is contiguous.
    # One explicit transposing copy: a strided view here would make bmm copy every channel twice.
    columns = signal.view(batch, chunks, steps, dim).permute(3, 0, 1, 2).contiguous().view(dim, batch * chunks, steps)
    output = torch.bmm(columns, matrix.transpose(1, 2))  # (D, B*C, T)
    summaries = torch.bmm(columns, gathers.transpose(1, 2)).view(dim, batch, chunks, -1)
    state = initial_state.float().permute(1, 0, 2) if initial_state is not None else x.new_zeros(dim, batch, components)
    inherited, _ = _carry(summaries[..., :components], weights.carries[0], state, reverse=False)
    last_inherited = inherited[:, :, -1]  # the final state comes from here and the last chunk's real steps
    if backward is not None:
        back_inherited, _ = _carry(summaries[..., components:], weights.carries[1], torch.zeros_like(state), reverse=True)
        inherited = torch.cat([inherited, back_inherited], dim=-1)
    output.baddbmm_(inherited.view(dim, batch * chunks, -1), readouts)  # in place: no second (D, B*C, T)
    if output.requires_grad and not capturing_graph():
        # The gradient comes back through the transposed view below, with strides no BLAS call
        # reads: both bmm backwards would then copy it one (T, T) channel at a time (2 x D small
        # clones a call, 10x the forward's bmm time). One transposing copy here instead. (A
        # compiler lays out its own gradients, and dynamo cannot trace a hook on an intermediate.)
        output.register_hook(_contiguous)
    # (D, B, C*T) -> (B, L', D) as a strided view: the caller's next op writes the contiguous
    # result, so no transposing copy of the whole output is made here.
    output = output.view(dim, batch, padded).permute(1, 2, 0)

    # Forward state after the last real token: the last chunk holds `tail` real steps.
    tail = length - (chunks - 1) * steps
    last_columns = columns.view(dim, batch, chunks, steps)[:, :, -1, :tail]  # (D, B, tail)
    tail_gather = gathers[:, :components, steps - tail :]  # input_gain * q ** (tail - 1 - s), (D, N, tail)
    final = torch.bmm(last_columns, tail_gather.transpose(1, 2)) + decay.pow(tail).unsqueeze(1) * last_inherited
    return output[:, :length], final.permute(1, 0, 2)


def chunked_scan_ema(
    x: Tensor, coefficients: EmaCoefficients, initial_state: Tensor | None, options: EmaOptions
) -> tuple[Tensor, Tensor | None]:
    """The ``chunked_scan`` EMA kernel (conventions in :mod:`mega_plugin.core.ops.conventions`)."""
    bidirectional, truncation, return_state = options.bidirectional, options.truncation, options.return_state
    batch, length, dim = x.shape
    if truncation is not None and truncation < length:
        raise ValueError(
            f"the chunked_scan EMA kernel cannot truncate (truncation={truncation} < length={length}); "
            "use ema_kernel='reference'"
        )
    if bidirectional and (initial_state is not None or return_state):
        raise ValueError("a bidirectional EMA has no streaming state (bidirectional=True)")
    gains = (coefficients.input_gain.float(), coefficients.decay.float(), coefficients.output_gain.float())
    signal = x.float()
    if length == 0:
        state = None
        if return_state:
            state = (
                initial_state.float()
                if initial_state is not None
                else signal.new_zeros(batch, dim, gains[1].shape[-1])
            )
        return signal, state
    forward = tuple(g[:dim] for g in gains)
    backward = tuple(g[dim:] for g in gains) if bidirectional else None
    # Autocast would run the Toeplitz matmuls in half precision: the sums must stay fp32,
    # and the output is fp32 whatever the input dtype, as the reference kernel returns it.
    with torch.autocast(signal.device.type, enabled=False):
        output, final = _chunked_scan(signal, forward, backward, initial_state, CHUNK_STEPS)  # type: ignore[arg-type]
    return output, (final if return_state else None)


def chunked_scan_supports(call: EmaCall) -> Support:
    """Accept every call whose kernel is not truncated below the length.

    Short causal decoding steps still go to the ``recurrent`` kernel, which has a higher priority.
    """
    length = call.length
    truncation = call.truncation
    if truncation is not None and truncation < length:
        return declined(f"truncation={truncation} < length={length}: a truncated EMA is not a finite-state scan")
    return SUPPORTED
