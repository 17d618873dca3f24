"""The forward/training tables compare memory in words that say which side needs more."""

from __future__ import annotations


def test_memory_ratio_says_more_when_ours_needs_more() -> None:
    from mega_plugin.benchmarks.report import _memory_ratio

    assert _memory_ratio(400.0, 100.0) == "4.00x less"
    assert _memory_ratio(81.0, 108.0) == "1.33x more"
    assert _memory_ratio(None, 100.0) == "-"


def test_gemm_shares_use_the_higher_of_the_two_measurements() -> None:
    """A neighbour's burst slowed the GEMM before the cases (105 against 213 after): the share
    must be taken against 213, never above 100% of what the machine showed it can do."""
    from mega_plugin.benchmarks.forward import SuiteResult
    from mega_plugin.benchmarks.machine import GemmRates
    from mega_plugin.benchmarks.measure import Case, Measurement
    from mega_plugin.benchmarks.report import format_suite_table, useful_gflops

    ours = Measurement(case=Case(implementation="ours", mode="forward", length=2048, chunk_size=None, batch=4), seconds=0.934)
    result = SuiteResult(
        measurements=[ours],
        gemm=GemmRates(blas=154.0, onednn=105.0),
        gemm_end=GemmRates(blas=147.0, onednn=213.0),
    )
    row = format_suite_table(result).splitlines()[-1]
    gflops = useful_gflops(ours)
    assert row.endswith(f"| {100 * gflops / 154.0:.0f}% | {100 * gflops / 213.0:.0f}% |")
    assert GemmRates(blas=1.0, onednn=None).higher(GemmRates(blas=2.0, onednn=None)) == GemmRates(blas=2.0, onednn=None)
    assert GemmRates(blas=1.0, onednn=None).higher(GemmRates(blas=0.5, onednn=3.0)) == GemmRates(blas=1.0, onednn=3.0)
