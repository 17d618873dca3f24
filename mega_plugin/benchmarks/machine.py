"""What machine a table was measured on, and the two fp32 GEMM rates it is judged against.

A speed figure means little without the CPU it came from: the same model reached 2.75x the
reference on one 2-core EPYC and 4.26x on another, because there oneDNN's GEMM ran 2.4 times
faster than MKL's. So every table carries the CPU model, the instruction-set flags that
decide which GEMM code runs, and both GEMM rates measured in the same run.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Final

import torch

from ..backends.cpu_fast.onednn import matmul_nt, onednn_available
from .common import best_time

REPORTED_FLAGS: Final = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
"""The /proc/cpuinfo flags that change which GEMM kernels MKL and oneDNN run."""


@dataclass(frozen=True)
class CpuInfo:
    model: str
    logical_cpus: int
    flags: tuple[str, ...]
    """The subset of :data:`REPORTED_FLAGS` this CPU has."""

    def describe(self) -> str:
        flags = " ".join(self.flags) or "none of " + " ".join(REPORTED_FLAGS)
        return f"{self.model}, {self.logical_cpus} logical CPUs, flags: {flags}"


def read_cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    """The CPU model and its GEMM-relevant flags (from /proc/cpuinfo where it exists)."""
    model = platform.processor() or platform.machine() or "unknown CPU"
    flags: set[str] = set()
    try:
        with open(cpuinfo_path) as lines:
            for line in lines:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    flags.update(value.split())
    except OSError:
        pass
    return CpuInfo(
        model=model, logical_cpus=os.cpu_count() or 1, flags=tuple(f for f in REPORTED_FLAGS if f in flags)
    )


@dataclass(frozen=True)
class GemmRates:
    """fp32 GFLOP/s of a square GEMM through each library; ``onednn`` is None where it is unusable."""

    blas: float
    """``torch.mm``: MKL (or OpenBLAS) sgemm."""
    onednn: float | None

    @property
    def fastest(self) -> float:
        return max(self.blas, self.onednn or 0.0)

    def higher(self, other: GemmRates) -> GemmRates:
        """Each library's higher rate of two measurements: a neighbour's burst during one of them
        (the machines are shared) must not inflate the model's share of the GEMM."""
        measured = [rate for rate in (self.onednn, other.onednn) if rate is not None]
        return GemmRates(blas=max(self.blas, other.blas), onednn=max(measured) if measured else None)

    def describe(self) -> str:
        onednn = "unavailable" if self.onednn is None else f"{self.onednn:.0f}"
        return f"GEMM fp32: torch.mm (BLAS) {self.blas:.0f} GFLOP/s, oneDNN {onednn} GFLOP/s"


def measure_gemm_rates(*, size: int = 2048, repeats: int = 3) -> GemmRates:
    """Both GEMMs on ``size``^3 with this process's threads, best of ``repeats``."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    flop = 2.0 * size**3

    def rate(call: object) -> float:
        return flop / best_time(call, repeats=repeats, warmup=1) / 1e9  # type: ignore[arg-type]

    blas = rate(lambda: a @ b)
    onednn = rate(lambda: matmul_nt(a, b)) if onednn_available().ok else None
    return GemmRates(blas=blas, onednn=onednn)


def measure_read_bandwidth(*, megabytes: int = 256, repeats: int = 3) -> float:
    """GB/s at which this process reads memory: a sum over ``megabytes`` of fp32, best of ``repeats``.

    Far larger than any cache, so every byte comes from DRAM once; a reduction does one add
    per loaded float, so it runs at the load bandwidth, not at the FLOP rate. Decoding at
    batch 1 reads every weight once per token: its rate is bounded by this divided by the
    bytes of the weights.
    """
    if megabytes < 1:
        raise ValueError(f"megabytes={megabytes}; allowed values: 1 or more")
    data = torch.ones(megabytes * 2**20 // 4)
    seconds = best_time(lambda: data.sum(), repeats=repeats, warmup=1)
    return data.numel() * data.element_size() / seconds / 1e9


def describe_run(*, threads: int, background_load: int = 0) -> str:
    """One line for the head of a table: CPU, torch, threads and the background load."""
    load = f", {background_load} busy background process(es)" if background_load else ", quiet"
    return f"{read_cpu_info().describe()}; torch {torch.__version__}, {threads} threads{load}"
