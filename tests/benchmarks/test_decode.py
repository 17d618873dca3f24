"""The decoding benchmark: its table keeps rows that were not measured, with the reason (no
silent drops), and ``python -m mega_plugin.benchmarks.decode`` runs ``mega-plugin bench decode``."""

from __future__ import annotations

import pytest

from mega_plugin.benchmarks.decode import DecodeResult, format_decode_table, main


def test_decode_table_prints_skipped_rows_with_their_reason() -> None:
    rows = [
        DecodeResult(256, 128, 2.0, 1024),
        DecodeResult(None, 32768, None, None, skipped="skipped: unchunked prefill over 8192 tokens is quadratic"),
    ]
    table = format_decode_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[2] == "| 256 | 128 | 2.00 | 500 | 1,024 |"
    assert table[3].startswith("| none | 32768 | skipped: unchunked prefill over 8192 tokens is quadratic |")


def test_module_main_runs_the_bench_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--contexts", "4", "--steps", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "## Decoding (core state), batch 1" in out and "Machine: " in out
    assert "| 256 | 4 |" in out
    assert "| none | 4 |" in out
