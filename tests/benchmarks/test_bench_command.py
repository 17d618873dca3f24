"""``mega-plugin bench`` refuses bad options by name before measuring anything."""

from __future__ import annotations

import pytest

from mega_plugin.cli import main


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--background-load", "-1"], "--background-load must be 0 or more, got -1"),
        (["--new-tokens", "1"], "--new-tokens must be at least 2"),
        (["--generate-prompts", "0"], "--generate-prompts must be positive, got 0"),
        (["--generate-batches", "-2"], "--generate-batches must be positive, got -2"),
        (["--threads", "0"], "--threads must be positive, got 0"),
        (["--preset", "gpt2"], "--preset 'gpt2' is not a paper preset; allowed values: wikitext103, enwik8"),
    ],
)
def test_bad_bench_options_are_named(arguments: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        main(["bench", "generate", *arguments])


def test_generate_suite_prints_machine_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    assert main(["bench", "generate", "--generate-prompts", "6", "--new-tokens", "2", "--threads", "1", "--no-llama"]) == 0
    out = capsys.readouterr().out
    assert "## generate() decoding" in out and "Machine: " in out
    assert "| 6 | 1 |" in out
