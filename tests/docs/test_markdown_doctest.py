"""The doctest support itself: block extraction, repairs, and the structure checker can fail."""

from __future__ import annotations

import doctest

import pytest

from _support.markdown_doctest import STRUCTURE, StructureChecker, apply_repairs, example_blocks, run_block

CHECKER = StructureChecker()
LOOSE = doctest.NORMALIZE_WHITESPACE | STRUCTURE


def test_blocks_with_examples_and_their_lines() -> None:
    text = "intro\n\n```python\n>>> 1 + 1\n2\n```\n\n```python\nplain = 1\n```\n```\n>>> x = 3\n```\n"
    blocks = example_blocks(text)
    assert [block.line for block in blocks] == [4, 12]
    assert blocks[0].text == ">>> 1 + 1\n2\n"


def test_a_repair_must_match_exactly_once() -> None:
    assert apply_repairs("is .", [("is .", "is <mask>.")]) == "is <mask>."
    with pytest.raises(ValueError, match="exactly once"):
        apply_repairs("is . is .", [("is .", "x")])
    with pytest.raises(ValueError, match="exactly once"):
        apply_repairs("nothing", [("is .", "x")])


@pytest.mark.parametrize(
    ("want", "got"),
    [
        ("' Paris'", "' dog'"),
        ("0.1", "6.52"),
        ("[{'generated_text': 'a b'}]", "[{'generated_text': 'x'}]"),
        ("tensor([[1, 2, 3]])", "tensor([[7, 8, 9]])"),
        ("tensor([0.5000, 0.2500])", "tensor([0.1000, 0.9000])"),
        ("torch.Size([1, 8, 16])", "torch.Size([1, 8, 16])"),
    ],
)
def test_structure_accepts_other_values_of_the_same_shape(want: str, got: str) -> None:
    assert CHECKER.check_output(want + "\n", got + "\n", LOOSE)


@pytest.mark.parametrize(
    ("want", "got"),
    [
        ("' Paris'", "0.1"),
        ("0.1", "'0.1'"),
        ("0.1", "nan_or_garbage"),
        ("[{'generated_text': 'a'}]", "[{'text': 'a'}]"),
        ("[{'generated_text': 'a'}]", "[{'generated_text': 'a'}, {'generated_text': 'b'}]"),
        ("tensor([[1, 2, 3]])", "tensor([[1, 2]])"),
        ("tensor([1, 2])", "tensor([1., 2.])"),
        ("tensor([1, 2])", "[1, 2]"),
    ],
)
def test_structure_rejects_another_structure(want: str, got: str) -> None:
    assert not CHECKER.check_output(want + "\n", got + "\n", LOOSE)


def test_without_the_flag_values_must_be_equal() -> None:
    assert not CHECKER.check_output("' Paris'\n", "' dog'\n", doctest.NORMALIZE_WHITESPACE)
    assert CHECKER.check_output("' Paris'\n", "' Paris'\n", doctest.NORMALIZE_WHITESPACE)


def test_run_block_reports_failures_and_marks_only_named_examples() -> None:
    block = example_blocks("```python\n>>> 'a' + 'b'\n'ab'\n>>> 2 * 3\n7\n```\n")[0]
    loose = run_block(block, name="t", path="t.md", weight_dependent=["2 * 3"])
    assert (loose["attempted"], loose["failed"], loose["structural"]) == (2, 0, 1)
    strict = run_block(block, name="t", path="t.md", weight_dependent=[])
    assert (strict["failed"], strict["structural"]) == (1, 0)
    assert "Expected:\n    7\nGot:\n    6" in strict["report"]
