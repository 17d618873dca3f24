"""Kernel ops of the MEGA core: signatures, the dispatch registry and the reference kernels."""

from __future__ import annotations

from typing import Final

from .attention_onednn import onednn_attention, onednn_attention_supports
from .attention_query_blocks import query_blocks_attention, query_blocks_supports
from .attention_reference import reference_attention
from .attention_sdpa import sdpa_attention, sdpa_supports
from .ema_chunked_scan import chunked_scan_ema, chunked_scan_supports
from .ema_recurrent import recurrent_ema, recurrent_supports
from .ema_reference import reference_ema
from .linear import onednn_linear, onednn_linear_supports, reference_linear
from .onednn import onednn_unavailable
from .registry import (
    AUTO,
    OPS,
    REFERENCE,
    KernelError,
    KernelSpec,
    is_registered,
    kernels,
    register_kernel,
    registry_version,
    resolve_kernel,
    set_discovery,
    unregister_kernel,
)
from .signatures import EmaCoefficients

REFERENCE_EMA: Final = KernelSpec(
    name=REFERENCE,
    op="ema",
    fn=reference_ema,
    priority=0,
    description="FFT convolution in fp32 with exact streaming-state algebra (the ground truth)",
)
REFERENCE_ATTENTION: Final = KernelSpec(
    name=REFERENCE,
    op="attention",
    fn=reference_attention,
    priority=0,
    description="matmul-mask-normalise-matmul for softmax, laplace and relu2 (the ground truth)",
)
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
ONEDNN_ATTENTION: Final = KernelSpec(
    name="onednn",
    op="attention",
    fn=onednn_attention,
    priority=7,
    is_available=onednn_unavailable,
    supports=onednn_attention_supports,
    description="the reference arithmetic frame by frame in oneDNN fp32 GEMMs (CPU; AVX-512 where MKL runs AVX2)",
)
REFERENCE_LINEAR: Final = KernelSpec(
    name=REFERENCE,
    op="linear",
    fn=reference_linear,
    priority=0,
    description="torch.nn.functional.linear (the ground truth)",
)
ONEDNN_LINEAR: Final = KernelSpec(
    name="onednn",
    op="linear",
    fn=onednn_linear,
    priority=5,
    is_available=onednn_unavailable,
    supports=onednn_linear_supports,
    description="fp32 CPU projections as oneDNN GEMMs, forward and backward (AVX-512 where MKL runs AVX2)",
)
BUILTIN_KERNELS: Final = (
    REFERENCE_EMA,
    REFERENCE_ATTENTION,
    RECURRENT_EMA,
    CHUNKED_SCAN_EMA,
    SDPA_ATTENTION,
    QUERY_BLOCKS_ATTENTION,
    ONEDNN_ATTENTION,
    REFERENCE_LINEAR,
    ONEDNN_LINEAR,
)


_builtins_checked_at = -1


def _ensure_reference_kernels() -> None:
    # Keeps the core usable on its own (no plugin manager): the built-in kernels always exist.
    # Runs before every lookup, so it checks again only after the registry changed.
    global _builtins_checked_at
    if _builtins_checked_at == registry_version():
        return
    for spec in BUILTIN_KERNELS:
        if not is_registered(spec.op, spec.name):
            register_kernel(spec)
    _builtins_checked_at = registry_version()


set_discovery(_ensure_reference_kernels)

__all__ = [
    "AUTO",
    "BUILTIN_KERNELS",
    "OPS",
    "REFERENCE",
    "REFERENCE_ATTENTION",
    "REFERENCE_EMA",
    "RECURRENT_EMA",
    "CHUNKED_SCAN_EMA",
    "SDPA_ATTENTION",
    "QUERY_BLOCKS_ATTENTION",
    "ONEDNN_ATTENTION",
    "REFERENCE_LINEAR",
    "ONEDNN_LINEAR",
    "onednn_attention",
    "onednn_linear",
    "reference_linear",
    "query_blocks_attention",
    "EmaCoefficients",
    "sdpa_attention",
    "chunked_scan_ema",
    "KernelError",
    "KernelSpec",
    "kernels",
    "reference_attention",
    "recurrent_ema",
    "reference_ema",
    "register_kernel",
    "resolve_kernel",
    "set_discovery",
    "unregister_kernel",
]
