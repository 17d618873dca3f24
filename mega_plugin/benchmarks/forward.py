"""Forward and training-step benchmarks: ours versus transformers' deprecated MEGA, side by side.

For every (mode, chunk, length) the implementations (ours, the reference, an equal-size
Llama) run one after the other, each in a fresh process, on the same tokens (ours and the
reference also on the same weights), so their ratios are measured under the same machine
load, optionally with busy background processes (``--background-load N``). Both fp32 GEMMs
(BLAS and oneDNN) measured in the same run give the achieved fraction of each. The
same as ``mega-plugin bench forward`` (fairseq2 environment, where transformers 4.57's
deprecated MEGA is importable)::

    python -m mega_plugin.benchmarks.forward --lengths 512 2048 8192 --chunks 256 none --output-dir bench-out
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Sequence

from .background import busy_processes
from .common import Progress
from .flops import model_flops_per_token
from .isolated import available_mib, run_isolated
from .llama import llama_unavailable
from .machine import GemmRates, describe_run, measure_gemm_rates
from .measure import Case, Measurement
from .models import case_config, reference_unavailable
from .suite_command import run_bench_suite


@dataclass
class SuiteResult:
    """Everything one run measured."""

    measurements: list[Measurement] = field(default_factory=list)
    gemm: GemmRates = GemmRates(blas=0.0, onednn=None)
    gemm_end: GemmRates = GemmRates(blas=0.0, onednn=None)
    """The same GEMMs measured again after the last case: the machine's load can change during a run."""
    machine: str = ""
    """CPU model and flags, torch version, threads, background load (:func:`.machine.describe_run`)."""
    background_load: int = 0
    load_averages: tuple[float, float] = (0.0, 0.0)
    """One-minute load average before the first and after the last case (shared machines)."""
    threads: int = 1
    batch: int = 4
    repeats: int = 3
    notes: list[str] = field(default_factory=list)

    def find(self, implementation: str, mode: str, length: int, chunk_size: int | None) -> Measurement | None:
        """The measurement of one cell; Llama has no chunks, so any chunk size finds its row."""
        for m in self.measurements:
            c = m.case
            same_chunk = c.chunk_size == chunk_size or implementation == "llama"
            if (c.implementation, c.mode, c.length) == (implementation, mode, length) and same_chunk:
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
    with_llama: bool = True,
    background_load: int = 0,
    force_reference: bool = False,
    timeout_s: float = 900.0,
    preset: str | None = None,
    checkpointing: bool = False,
) -> SuiteResult:
    """Measure every combination; returns the measurements and the GEMM rates.

    ``background_load`` busy processes run from before the first GEMM until after the last one.

    ``checkpointing``: the training cases of every implementation run with activation checkpointing.

    With ``preset`` (a paper preset, :data:`~.models.PAPER_PRESETS`) every case is that model at
    its own chunk size (``chunk_sizes`` is ignored) and the Llama is left out.

    A reference case whose estimated memory exceeds 70% of the free RAM is skipped (its cell
    says why) unless ``force_reference``: then it runs, and a child killed for memory comes back
    as an error with its exit status.
    """
    import torch

    if preset is not None:
        chunk_sizes = (case_config(chunk_size=None, max_length=max(lengths), preset=preset).attention_chunk,)
        with_llama = False
    torch.set_num_threads(threads)
    result = SuiteResult(
        threads=threads,
        batch=batch,
        repeats=repeats,
        background_load=background_load,
        machine=describe_run(threads=threads, background_load=background_load),
    )
    implementations = ["ours"]
    for wanted, name, why_not in ((with_reference, "reference", reference_unavailable), (with_llama, "llama", llama_unavailable)):
        reason = why_not() if wanted else None
        if wanted and reason is None:
            implementations.append(name)
        elif reason is not None:
            result.notes.append(f"{name} not measured: {reason}")
    cases = [
        Case(implementation, mode, length, chunk, batch, preset, checkpointing=checkpointing and mode == "train")
        for mode in modes
        for chunk in chunk_sizes
        for length in lengths
        if chunk is None or length % chunk == 0  # the reference needs whole chunks
        for implementation in implementations
        if implementation != "llama" or chunk == chunk_sizes[0]  # Llama has no chunks: measured once
    ]
    progress = Progress(total=len(cases) + 1, label="bench")
    with busy_processes(background_load):
        progress.step("GEMM 2048 x 2048")
        result.gemm = measure_gemm_rates()
        load_start = os.getloadavg()[0]
        for case in cases:
            progress.step(f"{case.implementation} {case.mode} L={case.length} chunk={case.chunk_size or 'none'}")
            result.measurements.append(_measure(case, repeats=repeats, threads=threads, force=force_reference, timeout_s=timeout_s))
        result.gemm_end = measure_gemm_rates()
        result.load_averages = (load_start, os.getloadavg()[0])
    return result


def _measure(case: Case, *, repeats: int, threads: int, force: bool, timeout_s: float) -> Measurement:
    """One case in a fresh process, unless the reference would not fit in memory (then why not)."""
    available = available_mib() if case.implementation == "reference" and not force else None
    if available is not None:
        needed = estimated_reference_mib(case)
        if needed > 0.7 * available:
            return Measurement(case=case, error=f"skipped: needs ~{needed / 1024:.1f} GiB, {available / 1024:.1f} GiB free")
    return run_isolated(case, repeats=repeats, threads=threads, timeout_s=timeout_s)


def useful_gflops(measurement: Measurement) -> float | None:
    """Achieved model GFLOP/s of a forward measurement (see :func:`model_flops_per_token`)."""
    tokens_per_second = measurement.tokens_per_second
    if tokens_per_second is None:
        return None
    case = measurement.case
    config = case_config(chunk_size=case.chunk_size, max_length=case.length, preset=case.preset)
    flops = model_flops_per_token(config, length=case.length, chunk_size=case.chunk_size)
    if case.mode == "train":
        flops *= 3.0  # backward = two matmuls per forward matmul
    return flops * tokens_per_second / 1e9


def main(argv: Sequence[str] | None = None) -> int:
    return run_bench_suite("forward", argv)


if __name__ == "__main__":
    sys.exit(main())
