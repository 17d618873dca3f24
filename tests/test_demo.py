"""``mega-plugin demo`` (the README's main job) runs end to end on both transformers versions."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("transformers")

from mega_plugin.cli import main  # noqa: E402
from mega_plugin.commands.demo import HEAD_DEMOS, decode, encode  # noqa: E402


def test_byte_tokenizer_round_trips() -> None:
    text = "Mega: gated attention, ÉMA ✓"
    assert decode(encode(text)) == text
    assert encode("")[0] == 0 and encode("")[-1] == 2


def test_demo_reports_every_head_and_continues_the_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    text = "moving average"
    assert main(["demo", "--text", text, "--prompt-bytes", "4"]) == 0
    report = capsys.readouterr().out
    rows = [line for line in report.splitlines() if " via Auto" in line]
    assert len(rows) == len(HEAD_DEMOS) == 7, report
    for row in rows:
        assert "key problems: 0;" in row, row
        difference = float(re.search(r"after reload: (\S+)", row).group(1))
        assert difference <= 1e-6, row
    # Trained on the sentence, the causal LM continues its first bytes with the rest of it.
    assert f"from '{text[:4]}': '{text}'" in report, report


@pytest.mark.parametrize(("flag", "value"), [("--train-steps", "-1"), ("--prompt-bytes", "0"), ("--text", "")])
def test_demo_rejects_bad_arguments(flag: str, value: str) -> None:
    with pytest.raises(SystemExit, match=flag if flag != "--text" else "--text"):
        main(["demo", flag, value])
