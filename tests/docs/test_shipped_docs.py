"""Every ``>>>`` block of the shipped documents (``docs/*.md``, ``README.md``) runs as written.

Same runner as the seed document (one fresh interpreter, the tiny offline hub cache, the startup
hook installed, outputs that depend on the weights compared by structure); the examples never
name mega_plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _support.doc_examples import SHIPPED_WEIGHT_DEPENDENT, shipped_documents_with_examples
from _support.markdown_doctest import example_blocks

pytestmark = [pytest.mark.hf, pytest.mark.slow]

CASES = [
    (path, index, block.line)
    for path in shipped_documents_with_examples()
    for index, block in enumerate(example_blocks(path.read_text(encoding="utf-8")))
]


def test_the_hf_documents_have_examples() -> None:
    names = {path.name for path, _, _ in CASES}
    assert {"hf.md", "README.md"} <= names, names


@pytest.mark.parametrize(("path", "index", "line"), CASES, ids=[f"{p.name}-line{line}" for p, _, line in CASES])
def test_block_runs_as_written(doc_results: dict[tuple[str, int], dict[str, Any]], path: Path, index: int, line: int) -> None:
    entry = doc_results[(path.name, index)]
    assert entry["line"] == line and entry["attempted"] > 0
    assert entry["failed"] == 0, entry["report"]
    assert "mega_plugin" not in "".join(
        line for line in example_blocks(path.read_text(encoding="utf-8"))[index].text.splitlines() if ">>>" in line
    ), "examples must not need to name mega_plugin"


def test_weight_dependent_fragments_are_used() -> None:
    texts = "".join(block.text for path, _, _ in CASES for block in example_blocks(path.read_text(encoding="utf-8")))
    assert any(fragment in texts for fragment in SHIPPED_WEIGHT_DEPENDENT)
