"""The ``ema`` op: the multi-dimensional damped EMA over a sequence (reference kernel here)."""

from __future__ import annotations

from .reference import ema_fft, ema_kernel, ema_recurrent, reference_ema

__all__ = ["ema_fft", "ema_kernel", "ema_recurrent", "reference_ema"]
