"""Every table names its CPU and both GEMM rates: /proc/cpuinfo is parsed, the rates are real."""

from __future__ import annotations

from pathlib import Path

import pytest

from mega_plugin.benchmarks import machine
from mega_plugin.benchmarks.machine import GemmRates, describe_run, measure_gemm_rates, read_cpu_info

CPUINFO = """processor\t: 0
model name\t: Test CPU 9000
flags\t\t: fpu sse2 avx2 fma avx512f amx_tile
processor\t: 1
model name\t: Test CPU 9000
flags\t\t: fpu sse2 avx2 fma avx512f amx_tile
"""


def test_cpu_model_and_gemm_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = read_cpu_info(str(path))
    assert info.model == "Test CPU 9000"
    assert info.flags == ("avx2", "fma", "avx512f", "amx_tile")  # fpu/sse2 are not reported
    assert "Test CPU 9000" in info.describe() and "avx512f" in info.describe()


def test_a_missing_cpuinfo_still_describes_the_machine(tmp_path: Path) -> None:
    info = read_cpu_info(str(tmp_path / "absent"))
    assert info.model and info.flags == ()
    assert "none of" in info.describe()


def test_both_gemm_rates_are_measured_and_the_faster_is_the_yardstick() -> None:
    rates = measure_gemm_rates(size=128, repeats=1)
    assert rates.blas > 0
    assert rates.onednn is None or rates.onednn > 0
    assert rates.fastest == max(rates.blas, rates.onednn or 0.0)
    assert GemmRates(blas=100.0, onednn=250.0).fastest == 250.0
    assert "unavailable" in GemmRates(blas=100.0, onednn=None).describe()


def test_the_run_description_names_threads_and_load() -> None:
    assert "2 threads" in describe_run(threads=2) and "quiet" in describe_run(threads=2)
    assert "3 busy background" in describe_run(threads=1, background_load=3)


def test_read_bandwidth_is_a_positive_rate_and_checks_its_size() -> None:
    assert machine.measure_read_bandwidth(megabytes=8, repeats=1) > 0.1
    with pytest.raises(ValueError, match="megabytes=0"):
        machine.measure_read_bandwidth(megabytes=0)
