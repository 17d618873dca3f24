"""The benchmark tables keep rows that were not measured, with the reason (no silent drops)."""

from __future__ import annotations

import signal

from mega_plugin.benchmarks.decode import DecodeResult, format_decode_table
from mega_plugin.benchmarks.isolated import _describe_exit


def test_decode_table_prints_skipped_rows_with_their_reason() -> None:
    rows = [
        DecodeResult(256, 128, 2.0, 1024),
        DecodeResult(None, 32768, None, None, skipped="skipped: unchunked prefill over 8192 tokens is quadratic"),
    ]
    table = format_decode_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[2] == "| 256 | 128 | 2.00 | 500 | 1,024 |"
    assert table[3].startswith("| none | 32768 | skipped: unchunked prefill over 8192 tokens is quadratic |")


def test_killed_child_is_described_by_its_signal() -> None:
    assert _describe_exit(-int(signal.SIGKILL)).startswith("killed by SIGKILL")
    assert _describe_exit(3) == "exit 3"


def test_memory_ratio_says_more_when_ours_needs_more() -> None:
    from mega_plugin.benchmarks.report import _memory_ratio

    assert _memory_ratio(400.0, 100.0) == "4.00x less"
    assert _memory_ratio(81.0, 108.0) == "1.33x more"
    assert _memory_ratio(None, 100.0) == "-"
