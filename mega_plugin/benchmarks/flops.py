"""Useful model work (FLOPs) of the benchmark configuration and the machine's GEMM rate."""

from __future__ import annotations

import torch

from ..core.config import MegaCoreConfig
from ..backends.cpu_fast.onednn import matmul_nt, onednn_available
from .common import best_time


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
    """The fastest fp32 matrix multiply of this process's threads, GFLOP/s (best of ``repeats``).

    Both ``torch.mm`` (MKL, which runs AVX2 code on non-Intel CPUs) and, where it works, the
    oneDNN GEMM the fast kernels use are timed; the faster one is the yardstick, so the
    model's share of the GEMM rate is never flattered by a slow BLAS.
    """
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    candidates = [lambda: a @ b]
    if onednn_available().ok:
        candidates.append(lambda: matmul_nt(a, b))
    seconds = min(best_time(candidate, repeats=repeats, warmup=1) for candidate in candidates)
    return 2.0 * size**3 / seconds / 1e9
