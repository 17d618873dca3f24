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

RECURRENT_EMA: Final = KernelSpec(
    name="recurrent",
    op="ema",
    fn=recurrent_ema,
    priority=10,
    supports=recurrent_supports,
    description="step-by-step recurrence for short causal calls (decoding steps)",
)
CHUNKED_SCAN_EMA: Final = KernelSpec(
    name="chunked_scan",
    op="ema",
    fn=chunked_scan_ema,
    priority=5,
    supports=chunked_scan_supports,
    description="chunk-wise scan: Toeplitz matmuls inside chunks of 64 steps, state carried between (no FFT)",
)
SDPA_ATTENTION: Final = KernelSpec(
    name="sdpa",
    op="attention",
    fn=sdpa_attention,
    priority=5,
    supports=sdpa_supports,
    description="softmax through scaled_dot_product_attention: no (B, C, Lq, Lk) scores for long frames",
)
QUERY_BLOCKS_ATTENTION: Final = KernelSpec(
    name="query_blocks",
    op="attention",
    fn=query_blocks_attention,
    priority=6,
    supports=query_blocks_supports,
    description="the reference arithmetic over slices of the queries: long frames on CPU in cache-sized pieces",
)
KERNELS: Final = (RECURRENT_EMA, CHUNKED_SCAN_EMA, SDPA_ATTENTION, QUERY_BLOCKS_ATTENTION)

__all__ = [
    "CHUNKED_SCAN_EMA",
    "KERNELS",
    "QUERY_BLOCKS_ATTENTION",
    "RECURRENT_EMA",
    "SDPA_ATTENTION",
    "chunked_scan_ema",
    "query_blocks_attention",
    "recurrent_ema",
    "sdpa_attention",
]
