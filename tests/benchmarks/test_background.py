"""``--background-load N`` really runs N busy processes, and none outlives the measurement."""

from __future__ import annotations

import pytest

from mega_plugin.benchmarks.background import busy_processes


def test_busy_processes_run_during_the_block_and_are_gone_after() -> None:
    with busy_processes(2) as spinners:
        assert len(spinners) == 2
        assert all(spinner.poll() is None for spinner in spinners)  # still running
    assert all(spinner.poll() is not None for spinner in spinners)


def test_no_load_starts_nothing() -> None:
    with busy_processes(0) as spinners:
        assert spinners == []


def test_a_negative_load_names_the_option() -> None:
    with pytest.raises(ValueError, match="background_load=-1"):
        with busy_processes(-1):
            pass
