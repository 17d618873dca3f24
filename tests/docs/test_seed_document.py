"""Every ``>>>`` block of the model document (the seed) runs as written, on 4.57 and 5.x.

``from transformers import MegaConfig, MegaModel`` and every ``MegaFor...`` must give our classes,
``mnaylor/mega-base-wikitext`` comes from a tiny offline hub cache, and the two printed values that
depend on the real weights (``' Paris'``, ``0.1``) are compared by type. The copy under
``tests/fixtures/docs`` is the seed; it must equal the shared original where that exists.
"""

from __future__ import annotations

from typing import Any

import pytest

from _support.markdown_doctest import apply_repairs, example_blocks
from _support.doc_examples import SEED_FIXTURE, SEED_REPAIRS, SEED_WEIGHT_DEPENDENT, SHARED_SEED

pytestmark = [pytest.mark.hf, pytest.mark.slow]

SEED_TEXT = apply_repairs(SEED_FIXTURE.read_text(encoding="utf-8"), SEED_REPAIRS)
BLOCKS = example_blocks(SEED_TEXT)


def test_fixture_is_the_shared_seed() -> None:
    if not SHARED_SEED.exists():
        pytest.skip(f"no shared seed at {SHARED_SEED}")
    assert SEED_FIXTURE.read_bytes() == SHARED_SEED.read_bytes()


def test_the_document_has_its_nine_example_blocks() -> None:
    assert len(BLOCKS) == 9, [block.line for block in BLOCKS]
    assert BLOCKS[0].text.lstrip().startswith(">>> from transformers import MegaConfig, MegaModel")


def test_each_weight_dependent_output_is_in_the_document() -> None:
    for fragment in SEED_WEIGHT_DEPENDENT:
        assert sum(fragment in block.text for block in BLOCKS) == 1, fragment


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}-line{b.line}" for i, b in enumerate(BLOCKS)])
def test_block_runs_as_written(doc_results: dict[tuple[str, int], dict[str, Any]], index: int) -> None:
    entry = doc_results[(SEED_FIXTURE.name, index)]
    assert entry["line"] == BLOCKS[index].line
    assert entry["attempted"] > 0
    assert entry["failed"] == 0, entry["report"]


def test_exactly_the_weight_dependent_outputs_were_compared_by_structure(
    doc_results: dict[tuple[str, int], dict[str, Any]],
) -> None:
    structural = sum(doc_results[(SEED_FIXTURE.name, index)]["structural"] for index in range(len(BLOCKS)))
    assert structural == len(SEED_WEIGHT_DEPENDENT)
