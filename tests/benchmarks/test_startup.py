"""``mega-plugin bench startup`` runs and reports both variants side by side (no timing asserted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mega_plugin.benchmarks import startup
from mega_plugin.cli import main


def test_bench_startup_prints_both_variants(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "startup", "--startup-runs", "2", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "## Interpreter start with and without the startup hook (2 runs each" in out
    row = re.search(r"^\| `python -c` start \| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+) \|", out, re.MULTILINE)
    assert row is not None, out
    without, with_hook, difference = map(float, row.groups())
    assert abs((with_hook - without) - difference) < 0.11
    assert re.search(r"own import \(`-X importtime`, cumulative, median\): [\d.]+ ms", out), out
    assert (tmp_path / "startup.md").read_text().startswith("## Interpreter start")


def test_the_hook_variant_really_imports_the_hook(tmp_path: Path) -> None:
    pairs, how = startup.variants(tmp_path, with_transformers=True)
    assert [(a.name, b.name) for a, b in pairs] == [
        ("start, no hook", "start, hook"),
        ("import transformers, no hook", "import transformers, hook"),
    ]
    without, with_hook = pairs[0]
    if startup.installed_pth() is None:
        assert with_hook.code.startswith(f"import {startup.HOOK_MODULE};") and without.code == "pass"
    else:
        assert without.env["PYTHONPATH"].split(":")[0] == str(tmp_path) and "installed" in how
    assert startup.ENV_SWITCH not in with_hook.env


def test_runs_must_be_positive() -> None:
    with pytest.raises(SystemExit, match="--runs must be at least 1, got 0"):
        startup.run_startup_benchmark(runs=0)
