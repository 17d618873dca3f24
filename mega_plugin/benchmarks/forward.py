"""Forward and training-step benchmarks: ours versus transformers' deprecated MEGA, side by side.

For every (mode, chunk, length) the two implementations run one after the other, each in a
fresh process, on the same tokens and the same weights, so their ratio is measured under the
same machine load. A GEMM measured in the same run gives the achieved fraction of peak. The
same as ``mega-plugin bench forward`` (fairseq2 environment, where transformers 4.57's
deprecated MEGA is importable)::

    python -m mega_plugin.benchmarks.forward --lengths 512 2048 8192 --chunks 256 none --output-dir bench-out
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Sequence

from .common import Progress, benchmark_config
from .flops import gemm_gflops, model_flops_per_token
from .isolated import available_mib, run_isolated
from .measure import Case, Measurement
from .models import reference_unavailable
from .suite_command import run_bench_suite


@dataclass
class SuiteResult:
    """Everything one run measured."""

    measurements: list[Measurement] = field(default_factory=list)
    gemm_gflops: float = 0.0
    gemm_gflops_end: float = 0.0
    """The same GEMM measured again after the last case: the machine's load can change during a run."""
    load_averages: tuple[float, float] = (0.0, 0.0)
    """One-minute load average before the first and after the last case (shared machines)."""
    threads: int = 1
    batch: int = 4
    repeats: int = 3
    notes: list[str] = field(default_factory=list)

    def find(self, implementation: str, mode: str, length: int, chunk_size: int | None) -> Measurement | None:
        for m in self.measurements:
            c = m.case
            if (c.implementation, c.mode, c.length, c.chunk_size) == (implementation, mode, length, chunk_size):
                return m
        return None


def estimated_reference_mib(case: Case) -> float:
    """The reference keeps about four (B, Lq, Lk) fp32 tensors alive per attention call."""
    frame = min(case.chunk_size, case.length) if case.chunk_size else case.length
    return 4 * case.batch * case.length * frame * 4 / 2**20


def run_suite(
    *,
    lengths: tuple[int, ...],
    chunk_sizes: tuple[int | None, ...],
    modes: tuple[str, ...],
    batch: int,
    repeats: int,
    threads: int,
    with_reference: bool,
    force_reference: bool = False,
    timeout_s: float = 900.0,
) -> SuiteResult:
    """Measure every combination; returns the measurements and the GEMM rate.

    A reference case whose estimated memory exceeds 70% of the free RAM is skipped (its cell
    says why) unless ``force_reference``: then it runs, and a child killed for memory comes back
    as an error with its exit status.
    """
    import torch

    torch.set_num_threads(threads)
    result = SuiteResult(threads=threads, batch=batch, repeats=repeats)
    implementations = ["ours"]
    if with_reference:
        reason = reference_unavailable()
        if reason is None:
            implementations.append("reference")
        else:
            result.notes.append(f"reference not measured: {reason}")
    cases = [
        Case(implementation, mode, length, chunk, batch)
        for mode in modes
        for chunk in chunk_sizes
        for length in lengths
        if chunk is None or length % chunk == 0  # the reference needs whole chunks
        for implementation in implementations
    ]
    progress = Progress(total=len(cases) + 1, label="bench")
    progress.step("GEMM 2048 x 2048")
    result.gemm_gflops = gemm_gflops()
    load_start = os.getloadavg()[0]
    for case in cases:
        progress.step(f"{case.implementation} {case.mode} L={case.length} chunk={case.chunk_size or 'none'}")
        available = available_mib() if case.implementation == "reference" and not force_reference else None
        if available is not None:
            needed = estimated_reference_mib(case)
            if needed > 0.7 * available:
                result.measurements.append(
                    Measurement(case=case, error=f"skipped: needs ~{needed / 1024:.1f} GiB, {available / 1024:.1f} GiB free")
                )
                continue
        result.measurements.append(run_isolated(case, repeats=repeats, threads=threads, timeout_s=timeout_s))
    result.gemm_gflops_end = gemm_gflops()
    result.load_averages = (load_start, os.getloadavg()[0])
    return result


def useful_gflops(measurement: Measurement) -> float | None:
    """Achieved model GFLOP/s of a forward measurement (see :func:`model_flops_per_token`)."""
    tokens_per_second = measurement.tokens_per_second
    if tokens_per_second is None:
        return None
    case = measurement.case
    config = benchmark_config(chunk_size=case.chunk_size, causal=False)
    flops = model_flops_per_token(config, length=case.length, chunk_size=case.chunk_size)
    if case.mode == "train":
        flops *= 3.0  # backward = two matmuls per forward matmul
    return flops * tokens_per_second / 1e9


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench_suite("forward", argv)


if __name__ == "__main__":
    sys.exit(main())
