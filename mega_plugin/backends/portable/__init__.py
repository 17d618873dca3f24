"""Portable fast kernels: plain torch ops that serve any device.

* ``chunked_scan`` EMA: Toeplitz matmuls inside chunks of 64 steps, the state carried
  between them, instead of an FFT;
* ``recurrent`` EMA: the recurrence itself, for decoding steps;
* ``sdpa`` attention: softmax through ``scaled_dot_product_attention`` for long frames;
* ``query_blocks`` attention: the reference arithmetic over slices of the queries, so long
  unchunked frames keep their temporaries in cache.

Each agrees with the reference kernel of its op (tests/backends/portable) and declines the
calls it does not serve; the built-in plugin registers them (:data:`KERNELS`).
"""

from __future__ import annotations

from typing import Final

from ...core.ops import KernelSpec
from .attention_query_blocks import query_blocks_attention, query_blocks_supports
from .attention_sdpa import sdpa_attention, sdpa_supports
from .ema_chunked_scan import chunked_scan_ema, chunked_scan_supports
from .ema_recurrent import recurrent_ema, recurrent_supports

KERNELS: Final = tuple(
    KernelSpec(name=name, op=op, fn=fn, priority=priority, supports=supports, description=description)
    for name, op, fn, priority, supports, description in (
        ("recurrent", "ema", recurrent_ema, 10, recurrent_supports,
         "step-by-step recurrence for short causal calls (decoding steps)"),
        ("chunked_scan", "ema", chunked_scan_ema, 5, chunked_scan_supports,
         "chunk-wise scan: Toeplitz matmuls inside chunks of 64 steps, state carried between (no FFT)"),
        ("sdpa", "attention", sdpa_attention, 5, sdpa_supports,
         "softmax through scaled_dot_product_attention: no (B, C, Lq, Lk) scores for long frames"),
        ("query_blocks", "attention", query_blocks_attention, 6, query_blocks_supports,
         "the reference arithmetic over slices of the queries: long frames on CPU in cache-sized pieces"),
    )
)
"""(name, op, implementation, priority, call check, description) of each kernel, for the built-in plugin."""

__all__ = [
    "KERNELS",
    "chunked_scan_ema",
    "query_blocks_attention",
    "recurrent_ema",
    "sdpa_attention",
]
