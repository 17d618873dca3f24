"""Useful model work (FLOPs) of the benchmark configuration and the machine's GEMM rate."""

from __future__ import annotations

from ..core.config import MegaCoreConfig
from .machine import measure_gemm_rates


def model_flops_per_token(config: MegaCoreConfig, *, length: int, chunk_size: int | None) -> float:
    """Multiply-adds x 2 per token of the projections and the attention matmuls (forward).

    Per layer: v (D x V), mx (D x (2D + Z + V)), h (V x D), fc1 (D x F), fc2 (F x D), plus
    q.k (c x Z) and weights.v (c x V) over a frame of c = chunk (or the length) keys.
    EMA, norms and elementwise work are not counted: they are overhead, not model work.
    """
    d, v, z, f = config.hidden_size, config.intermediate_size, config.shared_representation_size, config.nffn_hidden_size
    frame = min(chunk_size, length) if chunk_size is not None else length
    projections = d * v + d * (2 * d + z + v) + v * d
    if config.use_normalized_ffn:
        projections += 2 * d * f
    attention = frame * (z + v)
    return 2.0 * config.num_hidden_layers * (projections + attention)


def gemm_gflops(*, size: int = 2048, repeats: int = 3) -> float:
    """The faster of the two fp32 GEMMs (:func:`.machine.measure_gemm_rates`), GFLOP/s: the
    yardstick of the model's share, never flattered by a slow BLAS."""
    return measure_gemm_rates(size=size, repeats=repeats).fastest
