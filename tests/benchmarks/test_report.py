"""The forward/training tables compare memory in words that say which side needs more."""

from __future__ import annotations


def test_memory_ratio_says_more_when_ours_needs_more() -> None:
    from mega_plugin.benchmarks.report import _memory_ratio

    assert _memory_ratio(400.0, 100.0) == "4.00x less"
    assert _memory_ratio(81.0, 108.0) == "1.33x more"
    assert _memory_ratio(None, 100.0) == "-"
