"""Recurrent EMA kernel for streaming steps: O(L * D * N) work, no FFT, no kernel build.

For a decoding step (a handful of tokens with a carried state) the FFT path spends its time
building the kernel and transforming; the recurrence touches each state entry once per token.
"""

from __future__ import annotations

from typing import Final

from torch import Tensor

from ...core.ops.ema.reference import ema_recurrent
from ...core.ops import EmaCall, EmaCoefficients, EmaOptions, SUPPORTED, Support, declined

MAX_STEP_LENGTH: Final = 16
"""Longest input the recurrent kernel accepts; longer prefills go to the convolution."""


def recurrent_ema(
    x: Tensor, coefficients: EmaCoefficients, initial_state: Tensor | None, options: EmaOptions
) -> tuple[Tensor, Tensor | None]:
    """The ``recurrent`` EMA kernel (causal, untruncated)."""
    if options.bidirectional or options.truncation is not None:
        raise ValueError("the recurrent EMA kernel serves causal, untruncated calls only")
    output, state = ema_recurrent(x, coefficients, initial_state)
    return output, (state if options.return_state else None)


def recurrent_supports(call: EmaCall) -> Support:
    """Accept short causal untruncated calls (decoding steps)."""
    if call.bidirectional:
        return declined("bidirectional EMA has no recurrence")
    if call.truncation is not None:
        return declined("a truncated EMA is not a finite-state recurrence")
    if call.length > MAX_STEP_LENGTH:
        return declined(f"length {call.length} > {MAX_STEP_LENGTH}: the convolution is faster")
    return SUPPORTED
